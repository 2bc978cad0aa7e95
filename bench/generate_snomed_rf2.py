"""A synthetic SNOMED CT edition in the RF2 Snapshot layout, of the International edition's size by default.

The real edition is licensed; the benchmark loads this instead. What it writes is what a release has:
`sct2_Concept_Snapshot_INT_<date>.txt`, `sct2_Description_Snapshot-en_INT_<date>.txt`,
`sct2_Relationship_Snapshot_INT_<date>.txt` and `der2_cRefset_LanguageSnapshot-en_INT_<date>.txt`,
tab-separated with the released headers and CRLF line ends, SCTIDs with their partition and Verhoeff check
digit. The shape (defaults): 360,000 active concepts under the root 138875005 in 15 levels (each ~2.2 × the
one above), every concept one IS-A parent on the level above and 40 % a second one on a shallower level
(~500k IS-A rows: a DAG, as SNOMED's), plus inactive IS-A rows and non-IS-A attributes the loader must skip;
an FSN and one to three synonyms each (~1M descriptions), the FSN and first synonym preferred in the US
English refset, the others acceptable; 3 % more concepts inactive (no IS-A). Files are written row by row.

    python -m bench.generate_snomed_rf2 DIRECTORY [--concepts 360000] [--seed 23]
"""

from __future__ import annotations

import argparse
import random
from contextlib import ExitStack
from pathlib import Path

ROOT, IS_A, FINDING_SITE = "138875005", "116680003", "363698007"
CORE, FSN, SYNONYM = "900000000000207008", "900000000000003001", "900000000000013009"
US_ENGLISH, PREFERRED, ACCEPTABLE = "900000000000509007", "900000000000548007", "900000000000549004"
PRIMITIVE, INFERRED, SOME, CASE = "900000000000074008", "900000000000011006", "900000000000451002", "900000000000448009"
DATE = "20250101"
LEVELS = 15
SECOND_PARENT_SHARE = 0.4
INACTIVE_SHARE = 0.03
HEADERS = {
    "concept": "id effectiveTime active moduleId definitionStatusId",
    "description": "id effectiveTime active moduleId conceptId languageCode typeId term caseSignificanceId",
    "relationship": "id effectiveTime active moduleId sourceId destinationId relationshipGroup typeId "
    "characteristicTypeId modifierId",
    "language": "id effectiveTime active moduleId refsetId referencedComponentId acceptabilityId",
}
FILE_NAMES = {
    "concept": f"sct2_Concept_Snapshot_INT_{DATE}.txt",
    "description": f"sct2_Description_Snapshot-en_INT_{DATE}.txt",
    "relationship": f"sct2_Relationship_Snapshot_INT_{DATE}.txt",
    "language": f"der2_cRefset_LanguageSnapshot-en_INT_{DATE}.txt",
}
WORDS = (
    "acute",
    "chronic",
    "lesion",
    "disorder",
    "fracture",
    "structure",
    "procedure",
    "finding",
    "left",
    "right",
    "upper",
    "lower",
    "renal",
    "hepatic",
    "cardiac",
    "pulmonary",
    "neoplasm",
    "infection",
    "congenital",
    "bone",
)

_D = [
    [
        (i + j) % 5 + 5 * ((i // 5 + j // 5) % 2)
        if i < 5 and j < 5
        else (i + j) % 5 + 5 * ((i // 5 + j // 5) % 2)
        if i >= 5 and j >= 5
        else (i + j) % 5 + 5
        if i < 5
        else (i - j) % 5 + 5
        if False
        else 0
        for j in range(10)
    ]
    for i in range(10)
]
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def verhoeff_digit(number: str) -> str:
    """The check digit SCTIDs end with."""
    check = 0
    for position, digit in enumerate(reversed(number)):
        check = _D[check][_P[(position + 1) % 8][int(digit)]]
    return str(_INV[check])


def sctid(item: int, partition: str) -> str:
    """A short-format SCTID: item, partition (00 concept, 01 description, 02 relationship), check digit."""
    body = f"{item}{partition}"
    return body + verhoeff_digit(body)


def level_sizes(concepts: int, levels: int = LEVELS) -> list[int]:
    """Concepts per level below the root: geometric, summing to `concepts - 1`."""
    low, high = 1.0, 10.0
    for _ in range(60):
        ratio = (low + high) / 2
        total = sum(ratio**k for k in range(1, levels))
        low, high = (ratio, high) if total < concepts - 1 else (low, ratio)
    sizes = [max(1, round(ratio**k)) for k in range(1, levels)]
    sizes[-1] += concepts - 1 - sum(sizes)
    return sizes


def write_edition(directory: Path, concepts: int = 360_000, seed: int = 23) -> dict[str, int]:
    """Write the four files into `directory`; the counts of rows written per file (and IS-A links)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts = dict.fromkeys((*HEADERS, "is_a"), 0)
    with ExitStack() as stack:
        out = {
            kind: stack.enter_context(open(directory / name, "w", encoding="utf-8", newline=""))
            for kind, name in FILE_NAMES.items()
        }
        for kind, header in HEADERS.items():
            out[kind].write(header.replace(" ", "\t") + "\r\n")

        def write(kind: str, *fields: object) -> None:
            out[kind].write("\t".join(map(str, fields)) + "\r\n")
            counts[kind] += 1

        ids = _Ids()
        levels: list[list[str]] = [[ROOT]]
        _concept(write, ids, rng, ROOT, active=True, name="SNOMED CT Concept")
        for size in level_sizes(concepts):
            above, level = levels[-1], []
            for _ in range(size):
                code = sctid(ids.next(), "00")
                _concept(write, ids, rng, code, active=True)
                parents = {rng.choice(above)}
                if len(levels) > 1 and rng.random() < SECOND_PARENT_SHARE:
                    parents.add(rng.choice(levels[rng.randrange(len(levels))]))
                for parent in sorted(parents):
                    write("relationship", sctid(ids.next(), "02"), DATE, 1, CORE, code, parent, 0, IS_A, INFERRED, SOME)
                    counts["is_a"] += 1
                if rng.random() < 0.1:  # an attribute, and a retired IS-A: rows the loader must skip
                    write(
                        "relationship",
                        sctid(ids.next(), "02"),
                        DATE,
                        1,
                        CORE,
                        code,
                        rng.choice(above),
                        1,
                        FINDING_SITE,
                        INFERRED,
                        SOME,
                    )
                    write("relationship", sctid(ids.next(), "02"), DATE, 0, CORE, code, ROOT, 0, IS_A, INFERRED, SOME)
                level.append(code)
            levels.append(level)
        for _ in range(round(concepts * INACTIVE_SHARE)):
            _concept(write, ids, rng, sctid(ids.next(), "00"), active=False)
    return counts


class _Ids:
    def __init__(self) -> None:
        self._item = 100_000

    def next(self) -> int:
        self._item += 1
        return self._item


def _concept(write, ids: _Ids, rng: random.Random, code: str, *, active: bool, name: str = "") -> None:
    name = name or " ".join(rng.choice(WORDS) for _ in range(3)).capitalize() + f" {code}"
    write("concept", code, DATE, 1 if active else 0, CORE, PRIMITIVE)
    terms = [(FSN, f"{name} (disorder)")] + [
        (SYNONYM, name if n == 0 else f"{name}, variant {n}") for n in range(rng.randint(1, 3))
    ]
    for number, (type_id, term) in enumerate(terms):
        description = sctid(ids.next(), "01")
        write("description", description, DATE, 1, CORE, code, "en", type_id, term, CASE)
        acceptability = PREFERRED if number < 2 else ACCEPTABLE
        write("language", _uuid(rng), DATE, 1, CORE, US_ENGLISH, description, acceptability)


def _uuid(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--concepts", type=int, default=360_000, help="active concepts, the root included")
    parser.add_argument("--seed", type=int, default=23)
    options = parser.parse_args()
    counts = write_edition(options.directory, options.concepts, options.seed)
    print(", ".join(f"{kind} {count:,}" for kind, count in counts.items()))


if __name__ == "__main__":
    main()
