"""`fhir_date_range(text)`: the instants a FHIR date/dateTime/instant covers, as `fhirdates.parse_date_range`
computes them (the SQL extraction of date index rows uses it; `index_sql`)."""

from django.db import migrations

# No row where `parse_date_range` answers None. Python's `datetime` holds years 1-9999 only: where it overflows
# (OverflowError) there is no row either; a year-only value of 9999 has no upper bound (HIGHEST). `$` of Python's
# `re` also matches before a final newline: here too. The shape (`9999-99-99T99:99:99.9…+99:99`) is checked with
# `translate` and string comparisons, the parts are then read by position: PostgreSQL's regular expressions
# cost 10-50 µs a value here (captures, bounded repeats), this ~1 µs.
# A set-returning SQL function, not strict: the planner inlines it; `OFFSET 0` keeps each step's values computed
# once (inlined, every expression would be copied into the next).
CREATE = r"""
CREATE FUNCTION fhir_date_range(value text) RETURNS TABLE (low timestamptz, high timestamptz)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
SELECT low, high FROM (
  SELECT CASE WHEN in_range THEN timezone('UTC', local_low - zone) END AS low,
         CASE WHEN in_range THEN coalesce(timezone('UTC', local_end - zone) - interval '1 microsecond',
                                          '9999-12-31 23:59:59.999999+00') END AS high
  FROM (
    SELECT local_low, local_end, zone,
           (local_end IS NULL OR local_end < '10000-01-01') AND local_low - zone >= '0001-01-01'
           AND local_low - zone < '10000-01-01' AND (local_end IS NULL OR local_end - zone < '10000-01-01') AS in_range
    FROM (
      SELECT local_low, zone,
             CASE WHEN month IS NULL THEN CASE WHEN year < 9999 THEN local_low + interval '1 year' END
                  WHEN day IS NULL THEN local_low + interval '1 month'
                  WHEN hour IS NULL THEN local_low + interval '1 day'
                  WHEN second IS NULL THEN local_low + interval '1 minute'
                  WHEN fraction = '' THEN local_low + interval '1 second'
                  ELSE local_low + (10 ^ greatest(0, 6 - length(fraction)))::int * interval '1 microsecond'
             END AS local_end
      FROM (
        SELECT year, month, day, hour, second, fraction, zone,
               make_timestamp(year, coalesce(month, 1), coalesce(day, 1), coalesce(hour, 0), coalesce(minute, 0), 0)
               + coalesce(second, 0) * interval '1 second'
               + rpad(left(fraction, 6), 6, '0')::int * interval '1 microsecond' AS local_low
        FROM (
          SELECT substr(b, 1, 4)::int AS year,
                 CASE WHEN nb >= 7 THEN substr(b, 6, 2)::int END AS month,
                 CASE WHEN nb >= 10 THEN substr(b, 9, 2)::int END AS day,
                 CASE WHEN nb >= 16 THEN substr(b, 12, 2)::int END AS hour,
                 CASE WHEN nb >= 16 THEN substr(b, 15, 2)::int END AS minute,
                 CASE WHEN nb >= 19 THEN substr(b, 18, 2)::int END AS second,
                 substr(b, 21) AS fraction,
                 CASE WHEN z = '' OR z = 'Z' THEN interval '0'
                      ELSE (CASE WHEN left(z, 1) = '-' THEN -1 ELSE 1 END)
                           * (substr(z, 2, 2)::int * interval '1 hour' + substr(z, 5, 2)::int * interval '1 minute')
                 END AS zone,
                 CASE WHEN z = '' OR z = 'Z' THEN 0 ELSE substr(z, 2, 2)::int * 60 + substr(z, 5, 2)::int END
                   AS zone_minutes
          FROM (
            SELECT b, length(b) AS nb, z
            FROM (
              SELECT b, z, translate(b, '012345678', '999999999') AS shape
              FROM (
                SELECT left(v, length(v) - length(z)) AS b, z
                FROM (
                  SELECT v, CASE WHEN length(v) < 16 THEN '' WHEN right(v, 1) = 'Z' THEN 'Z'
                                 WHEN substr(v, length(v) - 5, 1) IN ('+', '-') THEN right(v, 6) ELSE '' END AS z
                  FROM (SELECT CASE WHEN right(value, 1) = E'\n' THEN left(value, -1) ELSE value END AS v OFFSET 0) stripped
                  OFFSET 0
                ) zoned
                OFFSET 0
              ) split
              OFFSET 0
            ) shaped
            WHERE (shape IN ('9999', '9999-99', '9999-99-99', '9999-99-99T99:99', '9999-99-99T99:99:99')
                   OR (length(shape) > 20 AND left(shape, 20) = '9999-99-99T99:99:99.'
                       AND substr(shape, 21) = repeat('9', length(shape) - 20)))
              AND (z = '' OR (length(b) >= 16
                              AND (z = 'Z' OR translate(z, '012345678', '999999999') IN ('+99:99', '-99:99'))))
          ) measured
          OFFSET 0
        ) parts
        WHERE year >= 1 AND coalesce(month, 1) BETWEEN 1 AND 12 AND coalesce(hour, 0) < 24
          AND coalesce(minute, 0) < 60 AND coalesce(second, 0) < 60 AND zone_minutes < 1440
          AND coalesce(day, 1) BETWEEN 1 AND extract(day FROM make_date(year, coalesce(month, 1), 1)
                                                      + interval '1 month' - interval '1 day')
        OFFSET 0
      ) valid
      OFFSET 0
    ) ranged
    OFFSET 0
  ) checked
) covered
WHERE low IS NOT NULL
$fn$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("fhirstore", "0003_number_and_quantity_index"),
    ]

    operations = [
        migrations.RunSQL(CREATE, "DROP FUNCTION fhir_date_range(text);"),
    ]
