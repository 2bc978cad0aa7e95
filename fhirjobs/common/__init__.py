"""What the FHIR jobs share, so the next job starts from it instead of copying a sibling:

- `http`: the asynchronous request pattern (kick-off with `Prefer: respond-async`, poll, cancel);
- `status`: a job's snapshot → running/completed/failed, and the `X-Progress` text;
- `chunks`: packing chunk data (lines of NDJSON, ids) small for the work-chunk rows;
- `ranges`: the generate-ranges / load-ids walk over the store's keyset, the opening steps of any job that
  works through the resources (reindex, export);
- `registration`: what each job app's `ready()` registers (its job definitions, its FHIR operations);
- `snapshots`: expunging steps wait while an export reads their types as at its transactionTime;
- `commands`: the management commands' `--wait` (follow the job to its end, non-zero exit unless it completed).
"""
