"""Rows that belong to the user who created them (exports, imports), looked up by the id in a URL.

A malformed id, an unknown one and another user's all get the same "not found", so that nobody can probe
for the ids of other users' work.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Model, QuerySet

from fhirstore.exceptions import ResourceNotFound

Row = TypeVar("Row", bound=Model)


def owned_row(
    rows: QuerySet[Row],
    user: AbstractBaseUser,
    row_id: uuid.UUID | str,
    *,
    noun: str,
    not_found: type[ResourceNotFound],
    lock: bool = False,
) -> Row:
    """The row of `rows` with id `row_id` owned by `user` (`SELECT … FOR UPDATE` when `lock`).

    `noun` names the row in the messages ("export"); `not_found` is the error raised when there is none."""
    try:
        mine = rows.filter(id=uuid.UUID(str(row_id)), owner_id=user.pk)
    except ValueError:
        raise not_found(f"{row_id!r} is not an {noun} id") from None
    row = (mine.select_for_update() if lock else mine).first()
    if row is None:
        raise not_found(f"{noun.capitalize()} {row_id} is not known (ended and removed, or not yours)")
    return row
