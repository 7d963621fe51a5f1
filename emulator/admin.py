"""Loopback admin routes beside ARM: faults, instances, the upstream registry's tags, health. Tokens come from the tenant
(``emulator/entra.py``), as on Azure; principals are added with ``python -m emulator principal add``.

All but health need the default principal's client secret (``DIR/secrets/client_secret``) in the
``x-emulator-secret`` header, checked before anything else is read.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import rules
from emulator.arm import ControlPlane, error_response, read_json_body
from emulator.faults import Faults
from emulator.rules import ArmError
from emulator.upstream import UpstreamError

SECRET_HEADER = "x-emulator-secret"


def admin_routes(control: ControlPlane) -> list[Route]:
    def check_secret(request: Request) -> None:
        if not control.issuer.check_client_secret(request.headers.get(SECRET_HEADER)):
            raise ArmError(401, "InvalidClientSecret", f"The {SECRET_HEADER} header is missing or wrong.")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def faults(request: Request) -> Response:
        try:
            check_secret(request)
            if request.method == "POST":
                control.faults.set(Faults.model_validate(await read_json_body(request)))
            elif request.method == "DELETE":
                control.faults.set(Faults())
        except ArmError as err:
            return error_response(err)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            return error_response(rules.bad_request(f"Invalid faults: {problems}", code="InvalidFaults"))
        return JSONResponse(control.faults.faults.model_dump())

    async def instances(request: Request) -> Response:
        try:
            check_secret(request)
        except ArmError as err:
            return error_response(err)
        return JSONResponse({d["id"]: control.runtime.instance_info(d["id"]) for d in control.store.all("deployment")})

    async def upstream(request: Request) -> Response:
        """GET: the upstream's tags; POST ``{"image": "repo:tag", "digest": "sha256:.."}``: publish a release."""
        try:
            check_secret(request)
            if request.method == "POST":
                body = await read_json_body(request)
                published = control.registry.upstream.publish(str(body.get("image", "")), body.get("digest"))
                return JSONResponse(published)
        except ArmError as err:
            return error_response(err)
        except UpstreamError as err:
            return error_response(rules.bad_request(f"Cannot publish: {err}", code="InvalidUpstreamTag"))
        return JSONResponse({"tags": control.registry.upstream.tags()})

    return [
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/upstream", upstream, methods=["GET", "POST"]),
        Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/instances", instances, methods=["GET"]),
    ]
