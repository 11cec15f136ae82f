"""The checkpoint zoo: a registry of frozen records, resolved offline first, then on the hub.

``from_pretrained(name_or_path)`` accepts

1. a registry name (``"sst2"``): files from ``zoo/<name>/`` when they are in the checkout,
   otherwise downloaded from the record's hub repository; every file is checked against
   the sha256 in the registry before anything is loaded. A bare name is always a registry
   name, even where a folder of that name exists: write a folder as a path;
2. a local folder written by ``save_pretrained``, given as a path: ``./sst2``, an absolute
   path, anything with a ``/``, or a ``pathlib.Path``;
3. a hub repository id, ``owner/name`` (downloaded with ``huggingface_hub``), when no local
   folder has that path.

The modules:

- :mod:`~sj_bert.zoo.registry`: the records and ``registry.json``, which ships inside the
  package (``$SJ_BERT_ZOO`` names another zoo folder);
- :mod:`~sj_bert.zoo.cache`: checkpoints kept as byte parts, joined into ``$SJ_BERT_CACHE``;
- :mod:`~sj_bert.zoo.delta`: checkpoints stored as what differs from their base model,
  completed with the base's tensors as they are joined;
- :mod:`~sj_bert.zoo.quantize`: checkpoints whose spike-fed matrices are stored in int8,
  dequantized as they are joined;
- :mod:`~sj_bert.zoo.loading`: where a name points, and loading it (also for the recipes'
  checkpoint arguments);
- :mod:`~sj_bert.zoo.card`: the model cards written beside trained and published checkpoints.

``zoo/README.md`` is generated from the registry by ``python -m sj_bert.zoo --write-table``.
"""

from . import cache, card, delta, loading, quantize, registry
from .cache import (
    CACHE_MANIFEST, PART, cache_dir, complete_weights, join_parts, sha256_file, split_file, store_weights,
)
from .card import base_description, model_card, published_section
from .delta import (
    BaseModelError, base_source, base_tensors, check_complete, merge_base, read_weights, strip_base, tensor_sha256,
)
from .quantize import (
    CODES_SUFFIX, INT8_SCHEME, SCALE_SUFFIX, SPIKE_FED, dequantize_file, dequantize_matrix, fake_quant, quantize_file,
    quantize_matrix, spike_fed_keys,
)
from .loading import (
    ChecksumError, Located, from_pretrained, load_checkpoint, load_pretrained, locate, resolve, resolve_checkpoint,
)
from .registry import (
    ENV_VAR, BaseWeights, PretrainedRecord, QuantizedWeights, list_pretrained, load_registry, registry_path, results_table, spiking_settings, zoo_dir,
)

# the public names of the six modules, one place each
__all__ = [*registry.__all__, *cache.__all__, *delta.__all__, *quantize.__all__, *loading.__all__,
           *card.__all__]
