"""The native FHIR jobs: the one place where the batch engine (`batch`) and the FHIR store (`fhirstore`) meet.

Each job is a package of one shape; `fhirjobs.common` holds the steps and helpers they share. A job package
imports no sibling job, only `fhirjobs.common`.
"""
