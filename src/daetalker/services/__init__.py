"""Local MLOps services: the MLflow tracking server and an S3-compatible store.

Both run as real servers on 127.0.0.1, each in its own process group, and are
stopped by pid. Importing this package is cheap (no mlflow or boto3 import).
"""

from daetalker.services.mlflow_server import MlflowServer, default_state_dir, ensure_tracking_uri
from daetalker.services.s3_server import S3Server

__all__ = ["MlflowServer", "S3Server", "default_state_dir", "ensure_tracking_uri"]
