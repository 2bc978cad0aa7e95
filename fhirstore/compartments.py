"""FHIR R4's Patient compartment, from `CompartmentDefinition/patient` (4.0.1) itself.

A resource is in Patient P's compartment when one of its type's compartment parameters refers to P. The
Group and Patient level `$export` export exactly these compartments, so the list comes from the definition,
not from what the store happened to index: `search_params` indexes every parameter named here (adding the
ones its own table lacks) as a reference parameter, under the definition's name.

Each parameter maps to the element paths its R4 SearchParameter reads (FHIRPath reduced to dotted paths, as
in `search_params`; `.where(resolve() is Patient)` dropped: only references to a Patient count anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

PATIENT_COMPARTMENT: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "Account": {"subject": ("subject",)},
    "AdverseEvent": {"subject": ("subject",)},
    "AllergyIntolerance": {"patient": ("patient",), "recorder": ("recorder",), "asserter": ("asserter",)},
    "Appointment": {"actor": ("participant.actor",)},
    "AppointmentResponse": {"actor": ("actor",)},
    "AuditEvent": {"patient": ("agent.who", "entity.what")},
    "Basic": {"patient": ("subject",), "author": ("author",)},
    "BodyStructure": {"patient": ("patient",)},
    "CarePlan": {"patient": ("subject",), "performer": ("activity.detail.performer",)},
    "CareTeam": {"patient": ("subject",), "participant": ("participant.member",)},
    "ChargeItem": {"subject": ("subject",)},
    "Claim": {"patient": ("patient",), "payee": ("payee.party",)},
    "ClaimResponse": {"patient": ("patient",)},
    "ClinicalImpression": {"subject": ("subject",)},
    "Communication": {"subject": ("subject",), "sender": ("sender",), "recipient": ("recipient",)},
    "CommunicationRequest": {
        "subject": ("subject",),
        "sender": ("sender",),
        "recipient": ("recipient",),
        "requester": ("requester",),
    },
    "Composition": {"subject": ("subject",), "author": ("author",), "attester": ("attester.party",)},
    "Condition": {"patient": ("subject",), "asserter": ("asserter",)},
    "Consent": {"patient": ("patient",)},
    "Coverage": {
        "policy-holder": ("policyHolder",),
        "subscriber": ("subscriber",),
        "beneficiary": ("beneficiary",),
        "payor": ("payor",),
    },
    "CoverageEligibilityRequest": {"patient": ("patient",)},
    "CoverageEligibilityResponse": {"patient": ("patient",)},
    "DetectedIssue": {"patient": ("patient",)},
    "DeviceRequest": {"subject": ("subject",), "performer": ("performer",)},
    "DeviceUseStatement": {"subject": ("subject",)},
    "DiagnosticReport": {"subject": ("subject",)},
    "DocumentManifest": {"subject": ("subject",), "author": ("author",), "recipient": ("recipient",)},
    "DocumentReference": {"subject": ("subject",), "author": ("author",)},
    "Encounter": {"patient": ("subject",)},
    "EnrollmentRequest": {"subject": ("candidate",)},
    "EpisodeOfCare": {"patient": ("patient",)},
    "ExplanationOfBenefit": {"patient": ("patient",), "payee": ("payee.party",)},
    "FamilyMemberHistory": {"patient": ("patient",)},
    "Flag": {"patient": ("subject",)},
    "Goal": {"patient": ("subject",)},
    "Group": {"member": ("member.entity",)},
    "ImagingStudy": {"patient": ("subject",)},
    "Immunization": {"patient": ("patient",)},
    "ImmunizationEvaluation": {"patient": ("patient",)},
    "ImmunizationRecommendation": {"patient": ("patient",)},
    "Invoice": {"subject": ("subject",), "patient": ("subject",), "recipient": ("recipient",)},
    "List": {"subject": ("subject",), "source": ("source",)},
    "MeasureReport": {"patient": ("subject",)},
    "Media": {"subject": ("subject",)},
    "MedicationAdministration": {"subject": ("subject",), "patient": ("subject",), "performer": ("performer.actor",)},
    "MedicationDispense": {"subject": ("subject",), "patient": ("subject",), "receiver": ("receiver",)},
    "MedicationRequest": {"subject": ("subject",)},
    "MedicationStatement": {"subject": ("subject",)},
    "MolecularSequence": {"patient": ("patient",)},
    "NutritionOrder": {"patient": ("patient",)},
    "Observation": {"subject": ("subject",), "performer": ("performer",)},
    "Patient": {"link": ("link.other",)},
    "Person": {"patient": ("link.target",)},
    "Procedure": {"patient": ("subject",), "performer": ("performer.actor",)},
    "Provenance": {"patient": ("target",)},
    "QuestionnaireResponse": {"subject": ("subject",), "author": ("author",)},
    "RelatedPerson": {"patient": ("patient",)},
    "RequestGroup": {"subject": ("subject",), "participant": ("action.participant",)},
    "ResearchSubject": {"individual": ("individual",)},
    "RiskAssessment": {"subject": ("subject",)},
    "Schedule": {"actor": ("actor",)},
    "ServiceRequest": {"subject": ("subject",), "performer": ("performer",)},
    "Specimen": {"subject": ("subject",)},
    "SupplyDelivery": {"patient": ("patient",)},
    "SupplyRequest": {"subject": ("deliverFor",)},
    "VisionPrescription": {"patient": ("patient",)},
}

# Beyond the definition, as HAPI FHIR's bulk export does: `Device.patient` links a patient's own devices
# (implants, monitors), which US Core and the SMART clients (smart-fetch's default type list) export per patient.
PATIENT_COMPARTMENT_EXTENSIONS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "Device": {"patient": ("patient",)},
}
