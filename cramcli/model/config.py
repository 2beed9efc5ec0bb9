"""`CrammedBertConfig`: the HF config of crammed BERT, built from an arch budget.

Field names follow the arch budget (`num_layers`, `hidden_size`, ...) so `from_arch` is a plain copy; the HF
standard names (`num_hidden_layers`, `num_attention_heads`) are aliases through `attribute_map`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import PretrainedConfig

if TYPE_CHECKING:
    from cramcli.budgets import ArchBudget

LAYOUTS = ("v1", "v2")
ATTENTION_BACKENDS = ("pytorch", "flash", "reference")
SPARSE_MODES = ("off", "dynamic", "static")
POOLERS = ("zero_index", "avg")
POSITION_EMBEDDINGS = ("scaled-sinusoidal", "rotary", "rotary+sinusoidal")
QK_NORMS = ("none", "rms", "layer")
ACTIVATIONS = ("gelu", "relu2", "silu")


class CrammedBertConfig(PretrainedConfig):
    model_type = "cram-bert"
    attribute_map = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads"}

    layout: str = "v1"
    """`v1`: bare linear prediction head before the tied decoder (c5); `v2`: no prediction head."""
    num_layers: int = 16
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    """Width of the FFN's input projection; gated (`glu`), the output projection reads half of it."""
    vocab_size: int = 32768
    max_seq_length: int = 128
    """Rows of the sinusoid table: the longest input the model accepts."""
    norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    embedding_dropout: float = 0.1
    classifier_dropout: float = 0.1
    init_std: float = 0.02
    attention: str = "pytorch"
    """Attention backend: `pytorch` (SDPA), `flash` (flash-attn, CUDA fp16/bf16) or `reference` (explicit)."""
    legacy_ignore_padding: bool = False
    """Fidelity switch: ignore the padding mask in attention, as the original v1 flash model did."""
    sparse_prediction: str = "dynamic"
    """Decode only predicted positions: `dynamic` (exactly the labelled ones), `static` (a fixed count), `off`."""
    sparse_rate: float = 0.25
    """`static` mode decodes round(sparse_rate · batch · seq) positions; set it to the masking rate."""
    pooler: str = "zero_index"
    classifier_head_dim: int = 1024
    pad_token_id: int | None = 0
    """The tokenizer's special ids (cram's own tokenizer: pad 0, cls 4, sep 5, mask 6); `save_checkpoint` copies
    them from the checkpoint's tokenizer. `pad_token_id` is also the embedding's padding_idx."""
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    mask_token_id: int | None = None
    tie_word_embeddings: bool = True
    """The MLM decoder shares the word embedding's matrix (the arch budget's `tie_decoder`)."""
    # Modern options (arch budget; the defaults are the recipe's): see docs/recipes.md.
    position_embedding: str = "scaled-sinusoidal"
    rotary_base: float = 10000.0
    qk_norm: str = "none"
    activation: str = "gelu"
    glu: bool = True
    zero_init_residual: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        problems = []
        for name, allowed in (("layout", LAYOUTS), ("attention", ATTENTION_BACKENDS),
                              ("sparse_prediction", SPARSE_MODES), ("pooler", POOLERS),
                              ("position_embedding", POSITION_EMBEDDINGS), ("qk_norm", QK_NORMS),
                              ("activation", ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r} (allowed: {', '.join(allowed)})")
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.glu and self.intermediate_size % 2:
            problems.append(f"intermediate_size {self.intermediate_size} must be even (the gated FFN halves it)")
        if self.uses_rotary and self.head_size % 2:
            problems.append(f"rotary positions need an even head size, got {self.head_size}")
        if not 0.0 < self.sparse_rate <= 1.0:
            problems.append(f"sparse_rate {self.sparse_rate} must be in (0, 1]")
        if problems:
            raise ValueError("invalid crammed BERT config: " + "; ".join(problems))

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def uses_rotary(self) -> bool:
        return self.position_embedding in ("rotary", "rotary+sinusoidal")

    @property
    def uses_sinusoid(self) -> bool:
        return self.position_embedding in ("scaled-sinusoidal", "rotary+sinusoidal")

    @classmethod
    def from_arch(cls, arch: ArchBudget, **overrides: Any) -> CrammedBertConfig:
        """An arch budget (plus keyword overrides, e.g. `num_labels=3`, `sparse_rate=0.15`) → config."""
        fields = arch.model_dump(exclude={"classifier", "tie_decoder"})
        fields.update(pooler=arch.classifier.pooler, classifier_head_dim=arch.classifier.head_dim,
                      classifier_dropout=arch.classifier.dropout, tie_word_embeddings=arch.tie_decoder)
        fields.update(overrides)
        return cls(**fields)
