"""JSON schemas of the export layouts, written from their published descriptions (not from our writers).

- JADE: the README of the CC3M-QA-DC release (github.com/johncaged/OPT_Questioner, "Dataset Format"): each QA
  file an array of objects with question [str], answer [str], prob [float], type [str] in what | how | where |
  who | why | when | binary, object [list[int, int, int, int]] (x1, y1, x2, y2 scaled to 0..224),
  region_description [str], img_id [str], question_id [int]; each DC file an array of {object,
  region_description}. `JADE_QA` (object and region_description optional) checks an export of a
  type-conditioned dataset, whose pairs are not tied to a region; `JADE_QA_REGION`, with every field of the
  README required, one of a region-conditioned dataset.
- LLaVA: the conversation records of LLaVA's instruction data (`llava_instruct_150k.json`,
  `llava_v1_5_mix665k.json`): {"id", "image", "conversations": [{"from": "human" | "gpt", "value": str}, ...]},
  the image token `<image>` in the first human turn.
"""

BOX_224 = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 224},
    "minItems": 4,
    "maxItems": 4,
}

JADE_QA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "answer": {"type": "string"},
            "prob": {"type": "number"},
            "type": {"enum": ["what", "how", "where", "who", "why", "when", "binary"]},
            "object": BOX_224,
            "region_description": {"type": "string"},
            "img_id": {"type": "string", "pattern": "^[0-9]+$"},
            "question_id": {"type": "integer"},
        },
        "required": ["question", "answer", "prob", "type", "img_id", "question_id"],
        "additionalProperties": False,
    },
}

JADE_QA_REGION = {
    "type": "array",
    "items": {
        **JADE_QA["items"],
        "required": [
            "question",
            "answer",
            "prob",
            "type",
            "object",
            "region_description",
            "img_id",
            "question_id",
        ],
    },
}

JADE_DC = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"object": BOX_224, "region_description": {"type": "string"}},
        "required": ["object", "region_description"],
        "additionalProperties": False,
    },
}

LLAVA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "image": {"type": "string"},
            "conversations": {
                "type": "array",
                "minItems": 2,
                "items": {
                    "type": "object",
                    "properties": {"from": {"enum": ["human", "gpt"]}, "value": {"type": "string"}},
                    "required": ["from", "value"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["id", "image", "conversations"],
    },
}
