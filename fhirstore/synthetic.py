"""Deterministic synthetic data shaped like Synthea's, for benchmarks and demos.

The same `(patients, seed)` always gives the same resources, ids included. Like Synthea's bulk output,
clinical resources point at their Patient and Encounter by literal reference, and at Practitioners and
Organizations by conditional reference (`Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|…`), so
loading them exercises the same resolution as real data. About RESOURCES_PER_PATIENT resources are made
per patient; Organizations and Practitioners come first.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

RESOURCES_PER_PATIENT = 106  # mean of the draws below: 1 + 14 encounters x (1 + 5 obs + 1.5 others)
PATIENTS_PER_PROVIDER = 100  # one Organization and one Practitioner per this many patients
SYNTHEA = "https://github.com/synthetichealth/synthea"
NPI = "http://hl7.org/fhir/sid/us-npi"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
EASTERN = timezone(timedelta(hours=-5))

FAMILY_NAMES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Lewis",
)
GIVEN_NAMES = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
)
CITIES = ("Boston", "Worcester", "Springfield", "Cambridge", "Lowell", "Brockton", "Quincy", "Lynn", "Salem")
ENCOUNTER_TYPES = (
    ("185349003", "Encounter for check up (procedure)", "AMB"),
    ("185345009", "Encounter for symptom", "AMB"),
    ("50849002", "Emergency room admission (procedure)", "EMER"),
    ("410620009", "Well child visit (procedure)", "AMB"),
    ("32485007", "Hospital admission", "IMP"),
)
VITAL_SIGNS = (
    ("8302-2", "Body Height", "cm", 150.0, 195.0),
    ("29463-7", "Body Weight", "kg", 45.0, 120.0),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 17.0, 38.0),
    ("8867-4", "Heart rate", "/min", 55.0, 110.0),
    ("9279-1", "Respiratory rate", "/min", 12.0, 22.0),
    ("8310-5", "Body temperature", "Cel", 36.0, 38.5),
)
LABORATORY = (
    ("2339-0", "Glucose", "mg/dL", 65.0, 180.0),
    ("2093-3", "Total Cholesterol", "mg/dL", 140.0, 280.0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11.0, 17.5),
    ("2160-0", "Creatinine", "mg/dL", 0.6, 1.4),
    ("4548-4", "Hemoglobin A1c", "%", 4.5, 9.5),
)
CONDITIONS = (
    ("44054006", "Diabetes"),
    ("38341003", "Hypertension"),
    ("195662009", "Acute viral pharyngitis"),
    ("10509002", "Acute bronchitis"),
    ("40055000", "Chronic sinusitis"),
    ("55822004", "Hyperlipidemia"),
    ("444814009", "Viral sinusitis"),
    ("162864005", "Body mass index 30+ - obesity"),
)
PROCEDURES = (
    ("430193006", "Medication Reconciliation"),
    ("710824005", "Assessment of health and social care needs"),
    ("171207006", "Depression screening"),
    ("428191000124101", "Documentation of current medications"),
    ("117015009", "Throat culture"),
)
MEDICATIONS = (
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("860975", "metformin 500 MG Oral Tablet"),
    ("308136", "amlodipine 2.5 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("313782", "Acetaminophen 325 MG Oral Tablet"),
    ("834060", "Penicillin V Potassium 250 MG"),
)
VACCINES = (
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("113", "Td (adult) preservative free"),
    ("133", "Pneumococcal conjugate PCV 13"),
    ("08", "Hep B, adolescent or pediatric"),
)


def patient_count_for(resources: int) -> int:
    """Patients to generate for about `resources` resources."""
    return max(1, round(resources / RESOURCES_PER_PATIENT))


def generate_resources(patients: int, seed: int = 0) -> Iterator[dict]:
    """Yield the resources of `patients` synthetic patients (and their providers), deterministically."""
    return _Generator(random.Random(seed)).resources(patients)


class _Generator:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def resources(self, patients: int) -> Iterator[dict]:
        providers = max(1, -(-patients // PATIENTS_PER_PROVIDER))
        organizations = [self.organization(n) for n in range(providers)]
        practitioners = [self.practitioner(organization) for organization in organizations]
        yield from organizations
        yield from practitioners
        for _ in range(patients):
            provider = self.rng.randrange(providers)
            yield from self.patient_record(organizations[provider], practitioners[provider])

    def organization(self, number: int) -> dict:
        organization_id = self.new_id()
        city = self.rng.choice(CITIES)
        return {
            "resourceType": "Organization",
            "id": organization_id,
            "identifier": [{"system": SYNTHEA, "value": organization_id}],
            "active": True,
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                            "code": "prov",
                            "display": "Healthcare Provider",
                        }
                    ],
                    "text": "Healthcare Provider",
                }
            ],
            "name": f"{city.upper()} MEDICAL CENTER {number}",
            "telecom": [{"system": "phone", "value": f"555-{number % 1000:03d}-{self.rng.randrange(10000):04d}"}],
            "address": [
                {"line": [f"{self.rng.randrange(1, 999)} MAIN ST"], "city": city, "state": "MA", "country": "US"}
            ],
        }

    def practitioner(self, organization: dict) -> dict:
        return {
            "resourceType": "Practitioner",
            "id": self.new_id(),
            "identifier": [{"system": NPI, "value": str(self.rng.randrange(10**9, 10**10))}],
            "active": True,
            "name": [
                {
                    "family": self.rng.choice(FAMILY_NAMES) + str(self.rng.randrange(1000)),
                    "given": [self.rng.choice(GIVEN_NAMES) + str(self.rng.randrange(1000))],
                    "prefix": ["Dr."],
                }
            ],
            "gender": self.rng.choice(("male", "female")),
            "address": [{**organization["address"][0]}],
        }

    def patient_record(self, organization: dict, practitioner: dict) -> Iterator[dict]:
        rng = self.rng
        patient_id = self.new_id()
        born = datetime(1930, 1, 1, tzinfo=EASTERN) + timedelta(days=rng.randrange(85 * 365))
        gender = rng.choice(("male", "female"))
        yield {
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [
                {"system": SYNTHEA, "value": patient_id},
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                    "system": "http://hospital.smarthealthit.org",
                    "value": patient_id,
                },
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]},
                    "system": "http://hl7.org/fhir/sid/us-ssn",
                    "value": f"999-{rng.randrange(100):02d}-{rng.randrange(10000):04d}",
                },
            ],
            "name": [
                {
                    "use": "official",
                    "family": rng.choice(FAMILY_NAMES) + str(rng.randrange(1000)),
                    "given": [rng.choice(GIVEN_NAMES) + str(rng.randrange(1000))],
                }
            ],
            "telecom": [
                {"system": "phone", "value": f"555-{rng.randrange(1000):03d}-{rng.randrange(10000):04d}", "use": "home"}
            ],
            "gender": gender,
            "birthDate": born.date().isoformat(),
            "address": [
                {
                    "line": [f"{rng.randrange(1, 9999)} {rng.choice(FAMILY_NAMES)} Street"],
                    "city": rng.choice(CITIES),
                    "state": "MA",
                    "country": "US",
                }
            ],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}}],
        }
        patient = f"Patient/{patient_id}"
        doctor = f"Practitioner?identifier={NPI}|{practitioner['identifier'][0]['value']}"
        provider = f"Organization?identifier={SYNTHEA}|{organization['id']}"
        moment = born + timedelta(days=rng.randrange(30, 365))
        span = (datetime(2024, 1, 1, tzinfo=EASTERN) - moment).total_seconds()
        encounters = rng.randint(8, 20)
        for _ in range(encounters):
            moment += timedelta(seconds=rng.randrange(1, max(2, int(span / encounters))))
            yield from self.encounter(patient, doctor, provider, moment)

    def encounter(self, patient: str, doctor: str, provider: str, start: datetime) -> Iterator[dict]:
        rng = self.rng
        encounter_id = self.new_id()
        code, display, kind = rng.choice(ENCOUNTER_TYPES)
        end = start + timedelta(minutes=rng.randrange(15, 240))
        period = {"start": start.isoformat(), "end": end.isoformat()}
        yield {
            "resourceType": "Encounter",
            "id": encounter_id,
            "identifier": [{"use": "official", "system": SYNTHEA, "value": encounter_id}],
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": kind},
            "type": [{"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display}],
            "subject": _ref(patient),
            "participant": [{"individual": _ref(doctor), "period": period}],
            "period": period,
            "serviceProvider": _ref(provider),
        }
        encounter = f"Encounter/{encounter_id}"
        when = end.isoformat()
        for _ in range(rng.randint(2, 8)):
            yield self.observation(patient, encounter, when)
        if rng.random() < 0.4:
            code, display = rng.choice(CONDITIONS)
            yield {
                "resourceType": "Condition",
                "id": self.new_id(),
                "clinicalStatus": _concept(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", rng.choice(("active", "resolved"))
                ),
                "verificationStatus": _concept(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
                ),
                "category": [
                    _concept(
                        "http://terminology.hl7.org/CodeSystem/condition-category",
                        "encounter-diagnosis",
                        "Encounter Diagnosis",
                    )
                ],
                "code": _concept(SNOMED, code, display),
                "subject": _ref(patient),
                "encounter": _ref(encounter),
                "onsetDateTime": start.isoformat(),
                "recordedDate": start.isoformat(),
            }
        if rng.random() < 0.5:
            code, display = rng.choice(PROCEDURES)
            yield {
                "resourceType": "Procedure",
                "id": self.new_id(),
                "status": "completed",
                "code": _concept(SNOMED, code, display),
                "subject": _ref(patient),
                "encounter": _ref(encounter),
                "performedPeriod": period,
                "location": _ref(provider),
            }
        if rng.random() < 0.4:
            code, display = rng.choice(MEDICATIONS)
            yield {
                "resourceType": "MedicationRequest",
                "id": self.new_id(),
                "status": rng.choice(("active", "stopped", "completed")),
                "intent": "order",
                "medicationCodeableConcept": _concept(RXNORM, code, display),
                "subject": _ref(patient),
                "encounter": _ref(encounter),
                "authoredOn": start.isoformat(),
                "requester": _ref(doctor),
            }
        if rng.random() < 0.2:
            code, display = rng.choice(VACCINES)
            yield {
                "resourceType": "Immunization",
                "id": self.new_id(),
                "status": "completed",
                "vaccineCode": _concept(CVX, code, display),
                "patient": _ref(patient),
                "encounter": _ref(encounter),
                "occurrenceDateTime": start.isoformat(),
                "primarySource": True,
                "location": _ref(provider),
            }

    def observation(self, patient: str, encounter: str, when: str) -> dict:
        rng = self.rng
        laboratory = rng.random() < 0.4
        code, display, unit, low, high = rng.choice(LABORATORY if laboratory else VITAL_SIGNS)
        category = "laboratory" if laboratory else "vital-signs"
        return {
            "resourceType": "Observation",
            "id": self.new_id(),
            "status": "final" if rng.random() < 0.95 else "amended",
            "category": [_concept("http://terminology.hl7.org/CodeSystem/observation-category", category)],
            "code": _concept(LOINC, code, display),
            "subject": _ref(patient),
            "encounter": _ref(encounter),
            "effectiveDateTime": when,
            "issued": when,
            "valueQuantity": {
                "value": round(rng.uniform(low, high), 1),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }


def _ref(reference: str) -> dict:
    return {"reference": reference}


def _concept(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
        return {"coding": [coding], "text": display}
    return {"coding": [coding]}


def write_ndjson(resources: Iterable[dict], directory: Path) -> Counter:
    """Write resources as bulk-export NDJSON, `Type.000.ndjson` per type; returns the counts per type."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, IO[str]] = {}
    counts: Counter = Counter()
    try:
        for resource in resources:
            resource_type = resource["resourceType"]
            if resource_type not in files:
                files[resource_type] = (directory / f"{resource_type}.000.ndjson").open("w", encoding="utf-8")
            files[resource_type].write(json.dumps(resource, separators=(",", ":"), ensure_ascii=False) + "\n")
            counts[resource_type] += 1
    finally:
        for file in files.values():
            file.close()
    return counts
