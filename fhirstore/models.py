"""Resources, their superseded versions, the search index and the search result cache.

Layout choices, for scans over millions of rows:
- `Resource` holds the current version of every resource, body included, so a read or an export is one
  row; `ResourceVersion` holds only superseded versions (an initial load writes each body once).
- Text keys use the "C" collation: byte order, so keyset paging agrees with Python's string order, and
  `LIKE 'prefix%'` can use a B-tree.
- Index rows carry no surrogate key: their primary key is the search key itself, ending with the
  resource, so a search is one index-only range scan. They reference `Resource` without a database
  foreign key constraint (bulk loads COPY them in without a trigger per row); every write replaces a
  resource's rows in the same transaction.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models

C = "C"  # byte-order collation, see the module docstring


class Resource(models.Model):
    id = models.BigAutoField(primary_key=True)
    resource_type = models.CharField(max_length=64, db_collation=C)
    logical_id = models.CharField(max_length=64, db_collation=C)
    version_id = models.PositiveIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    body = models.JSONField(null=True)  # null once deleted; meta.versionId / meta.lastUpdated kept in step

    class Meta:
        constraints = [
            # Reads by id, and "ids of type T (changed since S) in id order" as an index-only keyset scan.
            models.UniqueConstraint(
                fields=["resource_type", "logical_id"],
                include=["last_updated", "deleted"],
                name="fhir_resource_type_id",
            ),
        ]
        indexes = [
            # `_lastUpdated` searches and sorting, and `_since` when few resources changed.
            models.Index(fields=["resource_type", "last_updated"], name="fhir_resource_type_updated"),
            # The deletions since a time: an export's check of what was deleted after `until`, and its `deleted`
            # list with `_since`. Without it those read every row changed since then to find the few deleted.
            models.Index(
                fields=["resource_type", "last_updated"],
                condition=models.Q(deleted=True),
                name="fhir_resource_deleted_updated",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.logical_id}/_history/{self.version_id}"


class ResourceVersion(models.Model):
    """A superseded version: the current one lives in `Resource`."""

    pk = models.CompositePrimaryKey("resource", "version_id")
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="versions", db_index=False)
    version_id = models.PositiveIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    body = models.JSONField(null=True)


def _index_resource_field() -> models.ForeignKey:
    return models.ForeignKey(Resource, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")


class TokenIndex(models.Model):
    """`identifier`, `code`, `status`, `category`, …: a system and a code."""

    pk = models.CompositePrimaryKey("resource_type", "param", "code", "system", "resource")
    resource_type = models.CharField(max_length=64, db_collation=C)
    param = models.CharField(max_length=64, db_collation=C)
    system = models.CharField(max_length=200, db_collation=C)  # "" when the value has none
    code = models.CharField(max_length=200, db_collation=C)
    resource = _index_resource_field()


class StringIndex(models.Model):
    """`name`, `family`, `given`: matched by case- and accent-insensitive prefix (or exactly)."""

    pk = models.CompositePrimaryKey("resource_type", "param", "normalized", "exact", "resource")
    resource_type = models.CharField(max_length=64, db_collation=C)
    param = models.CharField(max_length=64, db_collation=C)
    normalized = models.CharField(max_length=200, db_collation=C)
    exact = models.CharField(max_length=200, db_collation=C)
    resource = _index_resource_field()


class DateIndex(models.Model):
    """`birthdate`, `date`, …: the range of instants the value covers (see `fhirdates`)."""

    pk = models.CompositePrimaryKey("resource_type", "param", "low", "high", "resource")
    resource_type = models.CharField(max_length=64, db_collation=C)
    param = models.CharField(max_length=64, db_collation=C)
    low = models.DateTimeField()
    high = models.DateTimeField()
    resource = _index_resource_field()


class ReferenceIndex(models.Model):
    """Which resource points at which, by which parameter: reference searches and Patient compartments."""

    # Leading with the target: "everything that points at Patient P" is one range scan.
    pk = models.CompositePrimaryKey("target_id", "target_type", "resource_type", "param", "resource")
    resource_type = models.CharField(max_length=64, db_collation=C)
    param = models.CharField(max_length=64, db_collation=C)
    target_type = models.CharField(max_length=64, db_collation=C)
    target_id = models.CharField(max_length=64, db_collation=C)
    resource = _index_resource_field()


class NumberIndex(models.Model):
    """Custom `number` parameters: a decimal as a double (15 significant digits, more than FHIR data carries)."""

    pk = models.CompositePrimaryKey("resource_type", "param", "value", "resource")
    resource_type = models.CharField(max_length=64, db_collation=C)
    param = models.CharField(max_length=64, db_collation=C)
    value = models.FloatField()
    resource = _index_resource_field()


class QuantityIndex(models.Model):
    """Custom `quantity` parameters: a value with its unit's system and code (`5.4|http://unitsofmeasure.org|mg`)."""

    # Unit first: `value|system|code` searches are one range scan; a bare number scans the parameter's rows.
    pk = models.CompositePrimaryKey("resource_type", "param", "system", "code", "value", "resource")
    resource_type = models.CharField(max_length=64, db_collation=C)
    param = models.CharField(max_length=64, db_collation=C)
    system = models.CharField(max_length=200, db_collation=C)  # "" when the quantity has none
    code = models.CharField(max_length=200, db_collation=C)  # `code`, else `unit`; "" when it has neither
    value = models.FloatField()
    resource = _index_resource_field()


class SearchCache(models.Model):
    """One search's matches in order, so its pages stay stable; rows expire after EXPIRE_SEARCH_RESULTS_AFTER_MINUTES."""

    id = models.UUIDField(primary_key=True)
    resource_type = models.CharField(max_length=64)
    query = models.TextField()  # the normalized query string, for the `self` link
    created = models.DateTimeField(db_index=True)  # the stale-search cleanup deletes by this
    total = models.PositiveIntegerField()
    truncated = models.BooleanField(default=False)  # more matched than FHIR_SEARCH_MAX_RESULTS
    resource_ids = ArrayField(models.BigIntegerField())  # `Resource.id`s in result order


class CustomSearchParameter(models.Model):
    """An active SearchParameter resource, once per base type: what the store indexes beyond its built-in table.

    Written only in the transaction that writes the SearchParameter resource (see `custom_params`). A row is
    not trusted for search (`ready`) until the reindex job that applies it to the stored resources completed.
    A row without an `expression` is a deleted override of a built-in parameter: the built-in one is indexed
    again, and trusted once its reindex completed (then the row goes).
    """

    search_parameter = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="+")
    resource_type = models.CharField(max_length=64, db_collation=C)  # one of the SearchParameter's bases
    code = models.CharField(max_length=64, db_collation=C)
    kind = models.CharField(max_length=16)  # token, string, date, reference, number or quantity: the index tables
    expression = models.TextField(null=True)  # FHIRPath; null: a deleted override of a built-in parameter
    targets = ArrayField(models.CharField(max_length=64), default=list)  # reference: SearchParameter.target
    ready = models.BooleanField(default=False)  # its reindex completed: searches may use it
    reindex_job_id = models.UUIDField(null=True)  # the REINDEX job that makes it ready

    class Meta:
        constraints = [models.UniqueConstraint(fields=["resource_type", "code"], name="fhir_custom_param_code")]
        permissions = [
            ("manage_search_parameters", "Can create, change and delete SearchParameter resources"),
            ("reindex", "Can start a reindex ($reindex)"),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}.{self.code} ({self.kind})"


class SnapshotHold(models.Model):
    """A reader of the store as of a past instant (an export at its transactionTime), over some types: while it
    holds, nothing deletes history of those types for good (see `snapshots`). Expires by the database clock
    unless renewed, so a reader that died without releasing blocks nobody for long."""

    holder = models.UUIDField(primary_key=True)  # who holds (an export: its id); released by it
    purpose = models.CharField(max_length=16, default="export")  # what the holder is, named to whoever waits
    resource_types = ArrayField(models.CharField(max_length=64))
    as_of = models.DateTimeField()  # the instant it reads the store at: shown to whoever waits
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"snapshot hold {self.holder} over {', '.join(self.resource_types)} as of {self.as_of}"


class ExpungeMark(models.Model):
    """When history of a type was last removed for good (an expunge), by the database clock, just before that
    transaction committed: a snapshot of the store taken at an earlier instant lacks what existed then, so a
    reader's as-of must not precede it (see `snapshots`)."""

    resource_type = models.CharField(max_length=64, primary_key=True)
    expunged_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.resource_type} expunged at {self.expunged_at}"
