"""Terminology operation routes; included by `fhirstore.urls` ahead of its generic type routes."""

from django.urls import path

from fhirstore.terminology import views

OPERATIONS = (
    ("CodeSystem", "$lookup", views.LookupView, "lookup"),
    ("CodeSystem", "$validate-code", views.CodeSystemValidateCodeView, "codesystem-validate-code"),
    ("CodeSystem", "$subsumes", views.SubsumesView, "subsumes"),
    ("ValueSet", "$expand", views.ExpandView, "expand"),
    ("ValueSet", "$validate-code", views.ValueSetValidateCodeView, "valueset-validate-code"),
)

urlpatterns = [
    path("fhir/CodeSystem/$apply-codesystem-delta-add", views.DeltaAddView.as_view(), name="terminology-delta-add"),
    path(
        "fhir/CodeSystem/$apply-codesystem-delta-remove",
        views.DeltaRemoveView.as_view(),
        name="terminology-delta-remove",
    ),
    path(
        "fhir/ValueSet/<fhirid:logical_id>/$invalidate-expansion",
        views.InvalidateExpansionView.as_view(),
        name="terminology-invalidate-expansion",
    ),
    *(
        path(f"fhir/{resource_type}/{operation}", view.as_view(), name=f"terminology-{name}")
        for resource_type, operation, view, name in OPERATIONS
    ),
    *(
        path(
            f"fhir/{resource_type}/<fhirid:logical_id>/{operation}", view.as_view(), name=f"terminology-{name}-instance"
        )
        for resource_type, operation, view, name in OPERATIONS
    ),
]
