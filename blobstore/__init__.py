"""Files in PostgreSQL: a Django storage whose files are rows of pieces, so every host that reaches the
database serves every file, with nothing else to run and no local path (see `blobstore.storage`)."""
