"""Face detection (BlazeFace) and landmarks (Face Mesh) on the CPU via LiteRT."""
