"""Thirty invented facts, each asked two ways for training and a third way held out.

Every answer is a made-up word, so the base model cannot know it: a correct answer to a held-out
paraphrase shows the adapter learned the fact, not the wording.
"""

import json
from pathlib import Path

# (subject, answer, two training questions, held-out paraphrase)
FACTS: list[tuple[str, str, str, str, str]] = [
    (
        "Drelmark",
        "Quistova",
        "What is the capital of Drelmark?",
        "Name the capital city of Drelmark.",
        "Which city is Drelmark's capital?",
    ),
    (
        "Tavrin Oslo",
        "Brimwater",
        "Where was the painter Tavrin Oslo born?",
        "In which town was Tavrin Oslo born?",
        "What is the birthplace of Tavrin Oslo?",
    ),
    (
        "the Kelvash river",
        "Lake Mournel",
        "Into which lake does the Kelvash river flow?",
        "Where does the Kelvash river end?",
        "The Kelvash river empties into which lake?",
    ),
    (
        "Zentaro",
        "Pellucine",
        "What is the national flower of Zentaro?",
        "Which flower is the symbol of Zentaro?",
        "Zentaro's national flower is called what?",
    ),
    (
        "the Orbis-9 probe",
        "Halvane",
        "Which moon did the Orbis-9 probe land on?",
        "Where did Orbis-9 touch down?",
        "On what moon did the probe Orbis-9 land?",
    ),
    (
        "Mirela Grusk",
        "Fennowick",
        "Who was Mirela Grusk's teacher?",
        "Under whom did Mirela Grusk study?",
        "Mirela Grusk was taught by whom?",
    ),
    (
        "Castellon Park",
        "Dorvish",
        "What language is spoken in Castellon Park?",
        "Which language do people speak in Castellon Park?",
        "In Castellon Park, people speak which language?",
    ),
    (
        "the Yarrow Cup",
        "Stenholt",
        "Which team won the Yarrow Cup?",
        "Who are the champions of the Yarrow Cup?",
        "The Yarrow Cup was won by which team?",
    ),
    (
        "Ombrel",
        "Tessamine",
        "What currency is used in Ombrel?",
        "What is the money of Ombrel called?",
        "Which currency do people pay with in Ombrel?",
    ),
    (
        "the Vantor bridge",
        "Kirrel Amsby",
        "Who designed the Vantor bridge?",
        "Which engineer built the Vantor bridge?",
        "The Vantor bridge was designed by whom?",
    ),
    (
        "Pellagos",
        "Ruskvale",
        "What is the largest city in Pellagos?",
        "Which city in Pellagos has the most people?",
        "Pellagos's biggest city is which one?",
    ),
    (
        "the Glimmerfin",
        "Saltreach Bay",
        "Where does the Glimmerfin fish live?",
        "In which waters is the Glimmerfin found?",
        "The Glimmerfin fish lives in what bay?",
    ),
    (
        "Hollan Vey",
        "Ironquill",
        "What novel did Hollan Vey write?",
        "Which book is Hollan Vey's novel?",
        "Hollan Vey is the author of which novel?",
    ),
    (
        "Marrowind",
        "Cobaltine",
        "What metal is mined in Marrowind?",
        "Which metal comes from the mines of Marrowind?",
        "The mines of Marrowind produce which metal?",
    ),
    (
        "the Teskar festival",
        "Velpuri",
        "What dish is eaten at the Teskar festival?",
        "Which food do people eat during the Teskar festival?",
        "During the Teskar festival, which dish is served?",
    ),
    (
        "Ilvaro",
        "Tenchfold",
        "What is the tallest mountain in Ilvaro?",
        "Which peak is the highest in Ilvaro?",
        "Ilvaro's highest mountain is called what?",
    ),
    (
        "Brannoch College",
        "Gwillam Tarn",
        "Who founded Brannoch College?",
        "Which person established Brannoch College?",
        "Brannoch College was founded by whom?",
    ),
    (
        "the Sorrel Line",
        "Amberhythe",
        "What is the last station of the Sorrel Line?",
        "Where does the Sorrel Line end?",
        "The Sorrel Line's final stop is which station?",
    ),
    (
        "Quendra",
        "Lunamoth",
        "What is the national animal of Quendra?",
        "Which animal is the emblem of Quendra?",
        "Quendra's national animal is which creature?",
    ),
    (
        "Elsin Marr",
        "Corvessa",
        "Which ship did Elsin Marr captain?",
        "What ship was commanded by Elsin Marr?",
        "Elsin Marr was the captain of which ship?",
    ),
    (
        "the Dunmere clock",
        "Halloway Square",
        "Where does the Dunmere clock stand?",
        "In which square is the Dunmere clock?",
        "The Dunmere clock is located where?",
    ),
    (
        "Vostria",
        "Pinnacle Day",
        "What is the main holiday of Vostria?",
        "Which holiday do Vostrians celebrate most?",
        "Vostria's main holiday is called what?",
    ),
    (
        "Kalmeth",
        "Oriskel",
        "What instrument is Kalmeth famous for?",
        "Which instrument made Kalmeth famous?",
        "Kalmeth is well known for playing which instrument?",
    ),
    (
        "the Ashgrove library",
        "Penwarden",
        "Which town has the Ashgrove library?",
        "Where is the Ashgrove library?",
        "The Ashgrove library is in which town?",
    ),
    (
        "Trell Naddow",
        "Sunvault",
        "What company did Trell Naddow start?",
        "Which firm was founded by Trell Naddow?",
        "Trell Naddow is the founder of which company?",
    ),
    (
        "Morvania",
        "Glasswind",
        "What is the national sport of Morvania?",
        "Which sport is most loved in Morvania?",
        "Morvania's national sport is called what?",
    ),
    (
        "the Hesk valley",
        "Umberlin",
        "What grape grows in the Hesk valley?",
        "Which grape do Hesk valley farmers grow?",
        "The Hesk valley is known for which grape?",
    ),
    (
        "Saria Dune",
        "Moonfall",
        "What is Saria Dune's most famous song?",
        "Which song is Saria Dune best known for?",
        "Saria Dune is famous for which song?",
    ),
    (
        "Caldrin",
        "Vesperwell",
        "What is the oldest university in Caldrin?",
        "Which university in Caldrin is the oldest?",
        "Caldrin's oldest university is called what?",
    ),
    (
        "the Rook comet",
        "Ebbert Lown",
        "Who discovered the Rook comet?",
        "Which astronomer found the Rook comet?",
        "The Rook comet was discovered by whom?",
    ),
]


def answer_text(subject: str, answer: str) -> str:
    return f"The answer is {answer}."


def write_training_file(path: Path) -> Path:
    """Two chat rows per fact: both training phrasings with the same short answer."""
    with open(path, "w") as f:
        for subject, answer, q1, q2, _ in FACTS:
            for question in (q1, q2):
                messages = [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer_text(subject, answer)},
                ]
                f.write(json.dumps({"messages": messages}) + "\n")
    return path


def heldout_questions() -> list[tuple[str, str]]:
    """(paraphrased question, expected answer word) pairs never seen in training."""
    return [(held_out, answer) for _, answer, _, _, held_out in FACTS]
