"""What ``/docs`` shows of the request bodies the routes read themselves (as they stream in, see :mod:`.upload`).

FastAPI cannot see these bodies in the routes' signatures, so each route passes its schema as ``openapi_extra``.
"""

from __future__ import annotations

from ..contract import REGIONS
from .engine import FORMATS

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
