"""A small English word list for the synthetic speaker's sentences.

Common words chosen so that every viseme class (bilabials, labiodentals,
rounded and spread vowels, open vowels) occurs often.
"""

from __future__ import annotations

WORDS: tuple[str, ...] = tuple(
    """
    about above across after again air all almost along also always am among and animal
    another answer any apple are area arm around art ask at away baby back bag ball bank
    be bear beautiful because bed been before begin behind believe below best better
    between big bird black blue boat body book both bottom box boy bread bridge bright
    bring brother brown build busy but buy by call came can car care carry cat catch
    center change cheap cheese child choose city class clean clear close cloud cold
    color come common cook cool copy corner could count country cover cross cup cut
    dance dark day deep did different dinner do doctor dog door down draw dream dress
    drink drive dry during each early earth east easy eat edge egg eight end enough
    even evening ever every eye face fact fall family far farm fast father feel few
    field find fine fire first fish five floor flower fly follow food foot for forest
    four free fresh friend from front fruit full fun garden gave girl give glass go
    gold good great green ground group grow half hand happy hard have he head hear
    heart heavy help her here high hill him his hold home hope horse hot hour house
    how huge hundred idea if important in inside into iron island it job join juice
    just keep key kind king kitchen knew know lake land large last late laugh learn
    leave left less letter light like line lion list listen little live long look
    loud love low machine made make man many map market may me meet middle might milk
    mind minute money month moon more morning most mother mountain mouth move much
    music my name near need never new next nice night nine no noon north nose not
    note nothing now number ocean of off often oil old on once one only open orange
    other our out over own page paper park part party pass pay peace people pick
    picture piece place plan plant play please pocket point poor power problem pull
    purple push put queen question quick quiet rain reach read ready real red remember
    rest rich ride right river road rock room round rule run safe same save say school
    sea second see seem sell send seven shape share she ship shoe shop short should
    show side simple sing sister sit six sleep slow small smile snow so soft some
    something song soon sound south space speak special spring square stand star start
    stay step still stone stop story street strong study summer sun sure sweet swim
    table take talk tall teach team tell ten than thank that the their them then there
    these they thing think this those thought three through time today together too
    took top touch town tree true try turn two under until up upon us use usually
    valley very visit voice wait walk wall want warm was watch water wave way we
    weather week well went were west what wheel when where which while white who
    whole why wide will wind window winter wish with woman wonder wood word work world
    would write year yellow yes yesterday you young your zoo
    """.split()
)
