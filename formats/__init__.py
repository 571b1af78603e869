"""Readers for the published on-disk formats, streaming and memory-bounded (`jade.formats`).

- `vg`: Visual Genome 1.2 (image_data, region_descriptions, question_answers, ...; `ImageIndex`)
- `gqa`: GQA 1.2 questions (balanced or chunked all-questions) and scene graphs
- `vqa`: VQA v2 questions ⋈ annotations; `coco_image_path`
- `tsv`: CC3M / CC12M TSV files
- `shards`: image-text shards (webdataset tar, parquet): `list_shards`, `iter_shard`, `decode_image`
- `errors`: `FormatError(path, position, message)`, `ImageError(reason)`

Readers are classes with a `stats` (`common.ReadStats`) counting what was read and skipped; the
`iter_*` functions are shortcuts. Paths may be local paths or fsspec URLs.
"""
