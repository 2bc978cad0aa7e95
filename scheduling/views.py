"""`/control/scripts`: superusers upload, read, change and delete custom scripts (JSON, token or session auth)."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from jobsite.auth import TokenHasScope
from jobsite.models import Scope
from scheduling import scripts
from scheduling.exceptions import CustomScriptsDisabled, InvalidScript, ScriptExists, ScriptNotFound
from scheduling.models import CustomScript
from scheduling.sync import script_job_rows

ERROR_STATUS = {
    InvalidScript: status.HTTP_400_BAD_REQUEST,
    CustomScriptsDisabled: status.HTTP_403_FORBIDDEN,
    ScriptNotFound: status.HTTP_404_NOT_FOUND,
    ScriptExists: status.HTTP_409_CONFLICT,
}


class CustomScriptsEnabled(BasePermission):
    message = "custom scripts are switched off on this node (CUSTOM_SCRIPTS_ENABLED=false)"

    def has_permission(self, request, view) -> bool:
        return settings.CUSTOM_SCRIPTS_ENABLED


class IsSuperuser(BasePermission):
    message = "only superusers may manage custom scripts"

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_superuser)


class NewScript(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    source = serializers.CharField(trim_whitespace=False)
    enabled = serializers.BooleanField(default=True)


class ScriptChange(serializers.Serializer):
    source = serializers.CharField(trim_whitespace=False, required=False)
    enabled = serializers.BooleanField(required=False)

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError("give source and/or enabled")
        return attrs


def describe(script: CustomScript, with_source: bool) -> dict:
    body = {
        "name": script.name,
        "enabled": script.enabled,
        "sha256": script.sha256,
        "created_at": script.created_at,
        "updated_at": script.updated_at,
        "updated_by": script.updated_by.get_username() if script.updated_by else None,
        "jobs": script_job_rows(script.name),
    }
    if with_source:
        body["source"] = script.source
    return body


class ScriptsAPIView(APIView):
    permission_classes = [IsAuthenticated, CustomScriptsEnabled, IsSuperuser, TokenHasScope]
    required_scope = Scope.CONTROL

    def handle_exception(self, exc):
        """Every error is the control API's shape, `{"errors": [...]}`; a refused script also names the
        reason and the line on their own, for tools that point at it."""
        for error_type, code in ERROR_STATUS.items():
            if isinstance(exc, error_type):
                if isinstance(exc, InvalidScript):
                    where = f" (line {exc.line})" if exc.line else ""
                    return Response(
                        {"errors": [f"invalid script: {exc.reason}{where}"], "reason": exc.reason, "line": exc.line},
                        status=code,
                    )
                return Response({"errors": [str(exc)]}, status=code)
        response = super().handle_exception(exc)
        if isinstance(exc, serializers.ValidationError) and isinstance(response.data, dict):
            response.data = {
                "errors": [
                    f"{field}: {message}"
                    for field, messages in response.data.items()
                    for message in (messages if isinstance(messages, list) else [messages])
                ]
            }
        elif isinstance(exc, APIException) and isinstance(response.data, dict) and "detail" in response.data:
            response.data = {"errors": [str(response.data["detail"])]}
        return response


class ScriptListView(ScriptsAPIView):
    def get(self, request):
        return Response([describe(script, with_source=False) for script in scripts.list_scripts()])

    def post(self, request):
        data = NewScript(data=request.data)
        data.is_valid(raise_exception=True)
        script = scripts.create_script(user=request.user, **data.validated_data)
        return Response(describe(script, with_source=True), status=status.HTTP_201_CREATED)


class ScriptDetailView(ScriptsAPIView):
    def get(self, request, name: str):
        return Response(describe(scripts.get_script(name), with_source=True))

    def put(self, request, name: str):
        data = ScriptChange(data=request.data)
        data.is_valid(raise_exception=True)
        script = scripts.update_script(name, request.user, **data.validated_data)
        return Response(describe(script, with_source=True))

    def delete(self, request, name: str):
        scripts.delete_script(name, request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
