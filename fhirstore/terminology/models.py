"""Code systems, their versions and concepts, the transitive closure, and ValueSet expansions.

A loaded code system is a `CodeSystemVersion` (BUILDING while an upload writes it, then CURRENT, then
SUPERSEDED when another version of the same system is made current: exactly one CURRENT per system URL, a
partial unique index; DELETING while its rows are deleted in chunks). Its concepts, designations,
properties, parent links and closure rows carry the version's id and the concept's code (the "C" collation,
as the search index), not surrogate keys: an upload writes them chunk by chunk without looking ids up, and a
`:below` search joins the token index on the code.

The bulk tables have no database foreign keys to the version (as the search index has none to `Resource`):
uploads write them with set-based statements and deletes go in chunks, never as one cascade.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

C = "C"  # byte-order collation: keyset paging in code order, LIKE 'prefix%' on a B-tree


class VersionStatus(models.TextChoices):
    BUILDING = "BUILDING"
    CURRENT = "CURRENT"
    SUPERSEDED = "SUPERSEDED"
    DELETING = "DELETING"  # its rows are being deleted in chunks: it answers nothing any more


class CodeSystemVersion(models.Model):
    """One loaded version of a code system; queries without a version use the CURRENT one."""

    system = models.CharField(max_length=200, db_collation=C)
    version = models.CharField(
        max_length=64, db_collation=C, null=True, blank=True, help_text="empty until the upload read it from the file"
    )
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=VersionStatus.choices, default=VersionStatus.BUILDING)
    created_at = models.DateTimeField(db_default=Now())
    made_current_at = models.DateTimeField(null=True, blank=True)
    concept_count = models.PositiveIntegerField(default=0)
    closure_count = models.BigIntegerField(default=0)
    loaded_by = models.CharField(max_length=64, blank=True, help_text="the id of the upload that wrote it")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["system", "version"], name="terminology_system_version"),
            models.UniqueConstraint(
                fields=["system"], condition=Q(status=VersionStatus.CURRENT), name="terminology_one_current_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system}|{self.version or '?'} ({self.status})"


def _version_field() -> models.ForeignKey:
    return models.ForeignKey(CodeSystemVersion, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")


class Concept(models.Model):
    pk = models.CompositePrimaryKey("code_system_version", "code")
    code_system_version = _version_field()
    code = models.CharField(max_length=200, db_collation=C)
    display = models.TextField(blank=True)
    abstract = models.BooleanField(default=False, help_text="a grouper (a chapter, a block): not for use in data")

    class Meta:
        indexes = [
            models.Index(
                models.F("code_system_version"), models.functions.Lower("display"), name="terminology_concept_display"
            )
        ]


class Designation(models.Model):
    """Another name of a concept: a synonym, an inclusion term, a translation."""

    code_system_version = _version_field()
    code = models.CharField(max_length=200, db_collation=C)
    language = models.CharField(max_length=16, blank=True)
    use_system = models.CharField(max_length=200, blank=True)
    use_code = models.CharField(max_length=64, blank=True)
    value = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["code_system_version", "code"], name="terminology_designation_code")]


class PropertyType(models.TextChoices):
    """FHIR's CodeSystem.property.type; the value is kept as text and typed again when answered."""

    CODE = "code"
    CODING = "Coding"
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATETIME = "dateTime"
    DECIMAL = "decimal"


class ConceptProperty(models.Model):
    code_system_version = _version_field()
    code = models.CharField(max_length=200, db_collation=C)
    property = models.CharField(max_length=64, db_collation=C)
    type = models.CharField(max_length=16, choices=PropertyType.choices, default=PropertyType.STRING)
    value = models.TextField()
    system = models.CharField(max_length=200, blank=True, help_text="a Coding value's system")

    class Meta:
        indexes = [
            models.Index(fields=["code_system_version", "code"], name="terminology_property_code"),
            models.Index(fields=["code_system_version", "property"], name="terminology_property_name"),
        ]


class ParentLink(models.Model):
    """child is-a parent; a concept may have several parents (SNOMED CT)."""

    pk = models.CompositePrimaryKey("code_system_version", "child", "parent")
    code_system_version = _version_field()
    child = models.CharField(max_length=200, db_collation=C)
    parent = models.CharField(max_length=200, db_collation=C)

    class Meta:
        indexes = [models.Index(fields=["code_system_version", "parent", "child"], name="terminology_link_parent")]


class Closure(models.Model):
    """descendant is-a ancestor, transitively, and every concept is-a itself: `:below`, `is-a` and
    `$subsumes` are one index lookup."""

    pk = models.CompositePrimaryKey("code_system_version", "ancestor", "descendant")
    code_system_version = _version_field()
    ancestor = models.CharField(max_length=200, db_collation=C)
    descendant = models.CharField(max_length=200, db_collation=C)

    class Meta:
        indexes = [
            models.Index(fields=["code_system_version", "descendant", "ancestor"], name="terminology_closure_up")
        ]


class UploadedFile(models.Model):
    """A file sent inline (`data`) with an upload, kept until the upload has read it."""

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200, blank=True)
    content = models.BinaryField()
    created_at = models.DateTimeField(db_default=Now())


class ExpansionStatus(models.TextChoices):
    NOT_EXPANDED = "NOT_EXPANDED"  # also: stale, a code system it used changed
    EXPANDING = "EXPANDING"
    EXPANDED = "EXPANDED"
    FAILED = "FAILED"


class ValueSetExpansion(models.Model):
    """The stored expansion of one ValueSet version, and the code system versions it was built from."""

    url = models.CharField(max_length=200, db_collation=C)
    version = models.CharField(max_length=64, db_collation=C, blank=True)
    source = models.CharField(max_length=64, db_collation=C, blank=True, help_text="the ValueSet resource's id")
    source_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="its versionId expanded: another one makes this stale"
    )
    status = models.CharField(max_length=16, choices=ExpansionStatus.choices, default=ExpansionStatus.NOT_EXPANDED)
    error = models.TextField(blank=True)
    systems = ArrayField(
        models.CharField(max_length=200),
        default=list,
        help_text="the code systems the compose uses: a new current version of one makes it stale",
    )
    built_from = ArrayField(models.BigIntegerField(), default=list, help_text="the CodeSystemVersion ids used")
    total = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["url", "version"], name="terminology_expansion_url_version")]

    def __str__(self) -> str:
        return f"{self.url}|{self.version} ({self.status})"


class ExpansionConcept(models.Model):
    pk = models.CompositePrimaryKey("expansion", "position")
    expansion = models.ForeignKey(ValueSetExpansion, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    position = models.PositiveIntegerField()
    system = models.CharField(max_length=200, db_collation=C)
    version = models.CharField(max_length=64, blank=True)
    code = models.CharField(max_length=200, db_collation=C)
    display = models.TextField(blank=True)
