"""Items and users: ``PUT/GET/DELETE /v1/items/{id}``, ``/v1/users/{id}`` and bulk ``PUT``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import pydantic
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from shopcast.api.routes._common import (
    engine_of,
    json_body,
    pseudonyms_of,
    settings_of,
    store_of,
)
from shopcast.domain import Item, User
from shopcast.errors import BatchTooLargeError, FieldError, NotFoundError, ValidationError
from shopcast.ingest.validate import field_errors
from shopcast.privacy.pseudonym import Pseudonymizer
from shopcast.serving.engine import Engine
from shopcast.storage import Repository

router = APIRouter()

Record = Item | User


def _records(raw: Any, key: str, max_batch: int) -> list[Any]:
    if isinstance(raw, dict) and set(raw) == {key}:
        raw = raw[key]
    if not isinstance(raw, list):
        raise ValidationError(
            f"the body must be a list of {key} or {{{key!r}: [...]}}",
            [FieldError("body", f"got JSON {type(raw).__name__}")],
        )
    if len(raw) > max_batch:
        raise BatchTooLargeError(
            f"the batch has {len(raw)} {key}; at most {max_batch} per request",
            [FieldError(key, f"{len(raw)} > limit {max_batch}")],
        )
    return raw


def _resource(
    *,
    name: str,
    plural: str,
    model: type[Item] | type[User],
    repo: Callable[[Request], Repository[Any]],
    on_upsert: Callable[[Engine, Sequence[Any]], None],
    on_delete: Callable[[Engine, str], None] | None,
    ids: Callable[[Request], Pseudonymizer] | None = None,
) -> None:
    """Register the routes of one keyed resource (``DELETE`` only with ``on_delete``).

    ``ids`` maps the raw ids of requests to the stored ones (user pseudonyms): records
    are saved and looked up under the stored id, and answered with the raw one.
    """
    key = f"{name}_id"
    tag: list[str | Enum] = [plural]

    def validate(record: Any, index: int | None, path_id: str | None) -> Record | list[FieldError]:
        if not isinstance(record, dict):
            return [FieldError(name, "must be a JSON object", index)]
        if path_id is not None:
            if key in record and str(record[key]).strip() != path_id:
                return [FieldError(key, f"{record[key]!r} differs from the URL's {path_id!r}")]
            record = {**record, key: path_id}
        try:
            return model.model_validate(record)
        except pydantic.ValidationError as exc:
            return field_errors(exc, index)

    def save(request: Request, records: list[Any]) -> None:
        if ids is not None:
            records = [ids(request).user_record(r) for r in records]
        repo(request).upsert(records)
        on_upsert(engine_of(request), records)

    @router.put(f"/v1/{plural}/{{{key}}}", tags=tag, response_model=model)
    async def put_one(request: Request) -> Any:
        path_id = request.path_params[key].strip()
        checked = validate(await json_body(request), None, path_id)
        if isinstance(checked, list):
            raise ValidationError(f"invalid {name}", checked)
        await run_in_threadpool(save, request, [checked])
        return checked

    @router.put(f"/v1/{plural}", tags=tag, status_code=200)
    async def put_many(request: Request) -> JSONResponse:
        raw = _records(await json_body(request), plural, settings_of(request).api.max_batch)
        good: list[Any] = []
        errors: list[FieldError] = []
        for i, record in enumerate(raw):
            checked = validate(record, i, None)
            if isinstance(checked, list):
                errors.extend(checked)
            else:
                good.append(checked)
        if good:
            await run_in_threadpool(save, request, good)
        body: dict[str, Any] = {
            "upserted": len(good),
            "rejected": len({e.index for e in errors}),
            "errors": [e.as_dict() for e in errors],
        }
        if errors:
            body = {"error": "validation_error", "message": f"{body['rejected']} rejected", **body}
        return JSONResponse(body, status_code=422 if errors else 200)

    @router.get(f"/v1/{plural}/{{{key}}}", tags=tag, response_model=model)
    def get_one(request: Request) -> Any:
        record_id = request.path_params[key].strip()
        stored_id = ids(request).lookup(record_id) if ids is not None else record_id
        found = repo(request).get(stored_id)
        if found is None:
            raise NotFoundError(f"{name} {record_id!r} not found")
        return found.model_copy(update={key: record_id}) if ids is not None else found

    put_one.__name__ = f"put_{name}"
    put_many.__name__ = f"put_{plural}"
    get_one.__name__ = f"get_{name}"
    if on_delete is None:
        return
    forget = on_delete

    @router.delete(f"/v1/{plural}/{{{key}}}", tags=tag, status_code=204)
    def delete_one(request: Request) -> Response:
        record_id = request.path_params[key].strip()
        if not repo(request).delete(record_id):
            raise NotFoundError(f"{name} {record_id!r} not found")
        forget(engine_of(request), record_id)
        return Response(status_code=204)

    delete_one.__name__ = f"delete_{name}"


_resource(
    name="item",
    plural="items",
    model=Item,
    repo=lambda r: store_of(r).items,
    on_upsert=lambda engine, records: engine.upsert_items(records),
    on_delete=lambda engine, item_id: engine.delete_item(item_id),
)
_resource(
    name="user",
    plural="users",
    model=User,
    repo=lambda r: store_of(r).users,
    on_upsert=lambda engine, records: engine.upsert_users(records),
    on_delete=None,  # DELETE /v1/users/{id} is the full erasure (routes/privacy.py)
    ids=pseudonyms_of,
)
