"""TF Serving's REST `predict` bodies, decoded and answered as the model server does (api_rest.md).

The model server binary is not installable here, so the tests apply its documented JSON rules to a loaded
SavedModel's signature: the row format (`{"instances": [...]}`: one entry per batch row; a plain value when
the signature has one input, else an object of named inputs; every input gets the batch dimension) and the
column format (`{"inputs": {...}}`, or a plain value for a single input), `{"b64": ...}` for bytes. The
answer is `{"predictions": [...]}` (one object of named outputs per row) or `{"outputs": {...}}`.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import tensorflow as tf


def _value(item):
    if isinstance(item, dict) and set(item) == {"b64"}:
        return base64.b64decode(item["b64"])
    if isinstance(item, list):
        return [_value(x) for x in item]
    return item


def decode(body: str, signature) -> tuple[dict[str, tf.Tensor], bool]:
    """(the signature's keyword tensors, whether the body is in row format)."""
    request = json.loads(body)
    specs = signature.structured_input_signature[1]
    names = sorted(specs)
    if "instances" in request:
        rows = request["instances"]
        if len(names) == 1 and not all(isinstance(row, dict) and set(row) == set(names) for row in rows):
            columns = {names[0]: [_value(row) for row in rows]}
        else:
            columns = {name: [_value(row[name]) for row in rows] for name in names}
        row_format = True
    else:
        inputs = request["inputs"]
        columns = {n: _value(inputs[n]) for n in names} if isinstance(inputs, dict) else {names[0]: _value(inputs)}
        row_format = False
    tensors = {name: tf.constant(columns[name], dtype=specs[name].dtype) for name in names}
    for name, tensor in tensors.items():
        if not specs[name].shape.is_compatible_with(tensor.shape):
            raise ValueError(f"{name}: shape {tensor.shape} does not fit the signature's {specs[name].shape}")
    return tensors, row_format


def _json(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def answer(body: str, loaded, signature_name: str = "serving_default") -> dict:
    """The server's JSON answer to a predict request body, through the named signature."""
    signature = loaded.signatures[json.loads(body).get("signature_name", signature_name)]
    tensors, row_format = decode(body, signature)
    outputs = {name: value.numpy() for name, value in signature(**tensors).items()}
    if row_format:
        rows = len(next(iter(outputs.values())))
        return {
            "predictions": [{name: _json(value[i : i + 1])[0] for name, value in outputs.items()} for i in range(rows)]
        }
    return {"outputs": {name: _json(value) for name, value in outputs.items()}}
