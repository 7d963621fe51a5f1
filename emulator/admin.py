"""Loopback admin routes beside ARM: the local credential's token endpoint, faults, instances, health.

All but health need the client secret from the state dir in the ``x-emulator-secret`` header.
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
from emulator.tokens import TokenError

SECRET_HEADER = "x-emulator-secret"


def admin_routes(control: ControlPlane) -> list[Route]:
    def check_secret(request: Request) -> None:
        if not control.issuer.check_client_secret(request.headers.get(SECRET_HEADER)):
            raise ArmError(401, "InvalidClientSecret", f"The {SECRET_HEADER} header is missing or wrong.")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def token(request: Request) -> Response:
        try:
            check_secret(request)
            body = await read_json_body(request)
            lifetime = body.get("lifetime_seconds", 3600)
            if not isinstance(lifetime, int):
                raise rules.bad_request("lifetime_seconds must be an integer.")
            value, expires = control.issuer.issue(str(body.get("scope", "")), lifetime)
        except ArmError as err:
            return error_response(err)
        except TokenError as err:
            return error_response(rules.bad_request(str(err), code="invalid_scope"))
        return JSONResponse({"access_token": value, "token_type": "Bearer", "expires_on": expires})

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

    return [
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/token", token, methods=["POST"]),
        Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/instances", instances, methods=["GET"]),
    ]
