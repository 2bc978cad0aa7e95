"""Mounted by heavylift/urls.py with one line: `path("control/scripts", include("scheduling.urls"))`."""

from django.urls import path, re_path

from scheduling.views import ScriptDetailView, ScriptListView

urlpatterns = [
    path("", ScriptListView.as_view(), name="custom-scripts"),
    # `[/]` rather than `/`: the slash joins the name to the un-slashed mount point (Django's urls.W002
    # warns about a leading slash, which usually means a double one).
    re_path(r"^[/](?P<name>[A-Za-z0-9_-]{1,64})$", ScriptDetailView.as_view(), name="custom-script"),
]
