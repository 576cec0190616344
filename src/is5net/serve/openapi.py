"""What ``/docs`` shows of the request bodies the routes read themselves (as they stream in, see :mod:`.upload`).

FastAPI cannot see these bodies in the routes' signatures, so each route passes its schema as ``openapi_extra``.
"""

from __future__ import annotations

from ..contract import REGIONS
from ..inference.boxes import MAX_CLICKS
from .engine import FORMATS

_POINT = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2, "example": [120, 80]}
_CLICKS = "clicks refine the box's stage-1 mask (SAM's point prompts, docs/predict.md): "

MULTIPART_SEGMENT = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "box"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "the image (any format Pillow reads)",
                        },
                        "box": {
                            "type": "array",
                            "items": {"type": "string", "example": "60,40,230,170"},
                            "description": "x0,y0,x1,y1 in pixels of the image as displayed (EXIF applied); repeatable",
                        },
                        "points": {
                            "type": "array",
                            "items": {"type": "string", "example": "120,80 200,90:0"},
                            "description": _CLICKS + "'x,y' a foreground click, 'x,y:0' a background one, "
                            "separated by spaces; one field per box, in the order of the 'box' fields (empty for a "
                            f"box without clicks); at most {MAX_CLICKS} per box; not with coarse_mask",
                        },
                        "coarse_mask": {
                            "type": "string",
                            "format": "binary",
                            "description": "optional stage-1 mask (image size) used instead of stage 1's",
                        },
                        "threshold": {
                            "type": "string",
                            "description": "a number in [0, 1] or 'otsu' (default: the soft map)",
                        },
                        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                        "region": {
                            "type": "string",
                            "enum": list(REGIONS),
                            "description": "what the refiner sees (default: the server's --region)",
                        },
                    },
                }
            }
        },
    },
    "responses": {
        "200": {"description": "PNG mask or cutout, or JSON", "content": {"image/png": {}, "application/json": {}}}
    },
}
MULTIPART_IMAGE = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
JSON_SEGMENT = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["boxes"],
                    "properties": {
                        "boxes": {
                            "type": "array",
                            "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                        },
                        "points": {
                            "type": "array",
                            "items": {"type": "array", "items": _POINT, "nullable": True, "maxItems": MAX_CLICKS},
                            "description": _CLICKS + "one entry per box, [[x, y], ...] in pixels of the image "
                            "(null or [] for a box without clicks); with one box, [[x, y], ...] alone also does",
                            "example": [[[120, 80], [200, 90]]],
                        },
                        "point_labels": {
                            "type": "array",
                            "items": {
                                "type": "array",
                                "items": {"type": "integer", "enum": [0, 1]},
                                "nullable": True,
                            },
                            "description": "each click's label, laid out as 'points': 1 foreground, 0 background",
                            "example": [[1, 0]],
                        },
                        "threshold": {
                            "oneOf": [{"type": "number"}, {"type": "string", "enum": ["otsu"]}],
                            "nullable": True,
                        },
                        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                        "region": {"type": "string", "enum": list(REGIONS)},
                    },
                }
            }
        },
    }
}
