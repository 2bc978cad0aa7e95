"""The admin's site: titled Heavylift, its index leading with the batch dashboard (the operations view)."""

from django.contrib import admin

admin.site.site_header = admin.site.site_title = "Heavylift"
admin.site.index_title = "Operations"
admin.site.index_template = "admin/heavylift_index.html"  # the batch dashboard first, then every model
