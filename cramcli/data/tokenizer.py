"""WordPiece tokenizer with fixed special-token ids, trained with HF `tokenizers`; and `special_ids`, which
reads the special-token ids of any tokenizer.

The original passed its special tokens to the trainer as a Python set, so their ids changed with the hash
seed; cram's own are a list and always get ids 0..6. The tokenizer carries the budget's normaliser, the
Whitespace pre-tokenizer and the recipe's post-processor (single text → `A <sep>`, pair →
`<cls> A <sep> B <sep>`). Everything downstream (masking, padding, GLUE, convert, the saved config) takes its
ids from `special_ids(tokenizer)`, so a tokenizer the original trained, with `<pad>` at any id, works too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from cramcli.budgets import NormalizationBudget, TokenizerBudget
from cramcli.data.normalize import build_normalizer
from cramcli.utils import disk
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_object

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: list[str] = ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"]
"""Special tokens in id order: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, `<cls>`=4, `<sep>`=5, `<mask>`=6."""
SPECIAL_IDS: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID = (SPECIAL_IDS[t] for t in ("<pad>", "<cls>", "<sep>", "<mask>", "<unk>"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
"""A tokenizer's files: `tokenizers`' own, then the HF side files that name its special tokens (copied with it)."""


@dataclass(frozen=True)
class SpecialIds:
    """The ids of a tokenizer's special tokens: pad, cls, sep and mask always exist, the others may not."""

    pad: int
    cls: int
    sep: int
    mask: int
    unk: int | None = None
    bos: int | None = None
    eos: int | None = None
    tokens: dict[str, int] = field(default_factory=dict, compare=False)
    """Every special token of the tokenizer (text → id): what v1 masking never selects."""

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.tokens.values()) | {i for i in self.as_dict().values() if i is not None}))

    def config_fields(self) -> dict[str, int]:
        """The ids as HF config fields, so a saved config.json names the tokenizer's ids."""
        return {f"{role}_token_id": getattr(self, role) for role in REQUIRED}

    def as_dict(self) -> dict[str, int | None]:
        """role → id (no token texts)."""
        return {role: getattr(self, role) for role in ROLES}


ROLES = ("pad", "cls", "sep", "mask", "unk", "bos", "eos")
REQUIRED = ("pad", "cls", "sep", "mask")
CRAM_SPECIAL_IDS = SpecialIds(PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID, SPECIAL_IDS["<s>"], SPECIAL_IDS["</s>"],
                              dict(SPECIAL_IDS))
"""cram's own tokenizer (and the synthetic rows of `cram bench`, drawn from ids 7 and up)."""

# Token texts tried per role when no side file names them: cram's (and the original's) names, then BERT's.
_ROLE_TOKENS = {"pad": ("<pad>", "[PAD]"), "cls": ("<cls>", "[CLS]"), "sep": ("<sep>", "[SEP]"),
                "mask": ("<mask>", "[MASK]"), "unk": ("<unk>", "[UNK]"), "bos": ("<s>",), "eos": ("</s>",)}
SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json")
"""The HF files that name a tokenizer's special tokens, the first one present wins (`save_pretrained` writes both)."""


def special_ids(tokenizer: Tokenizer | str | Path, where: str | None = None, *, folder: Path | None = None,
                error: Callable[[str], Exception] = UsageError) -> SpecialIds:
    """The one rule for a tokenizer's special-token ids, whoever asks (data, training, checkpoints, GLUE, convert).

    `tokenizer`: a `tokenizers.Tokenizer`, a tokenizer.json or a folder holding one. The token *names* come from
    the side files beside it (`tokenizer_config.json`, else `special_tokens_map.json`; `folder` says where for a
    Tokenizer object) and otherwise are cram's/the original's (`<pad>`, ...) or BERT's (`[PAD]`, ...); the *ids*
    always from tokenizer.json, never assumed (an original tokenizer may have `<pad>` at any id). pad, cls, sep
    and mask must exist and differ. Problems raise `error` (a one-line message naming the file and the fix)."""
    if not isinstance(tokenizer, Tokenizer):
        file = Path(tokenizer) / "tokenizer.json" if Path(tokenizer).is_dir() else Path(tokenizer)
        where, folder = where or str(file), folder or file.parent
        tokenizer = _read_tokenizer(file, error)
    where = where or "the tokenizer"
    names, named_in = _token_names(folder, error)
    found: dict[str, int | None] = {role: next((i for t in names[role] if (i := tokenizer.token_to_id(t)) is not None),
                                               None) for role in ROLES}
    missing = [role for role in REQUIRED if found[role] is None]
    if missing and named_in is not None:
        raise error(f"{named_in}: {missing[0]} token {names[missing[0]][0]!r} is not in tokenizer.json's vocabulary;"
                    f" set {missing[0]}_token there to the tokenizer's {missing[0]} token")
    if missing:
        raise error(f"{where}: special-token ids incomplete: no {', '.join(names[r][0] for r in missing)} token (cram"
                    " needs <pad>, <cls>, <sep> and <mask>); use the tokenizer the model was trained with")
    ids = {role: found[role] for role in REQUIRED}
    if len(set(ids.values())) < len(ids):
        raise error(f"{where}: special-token ids collide ({', '.join(f'{r}={i}' for r, i in ids.items())}); each of"
                    " pad, cls, sep, mask needs its own token")
    tokens = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    tokens.update({tokenizer.id_to_token(i): i for i in found.values() if i is not None})
    return SpecialIds(**found, tokens=dict(sorted(tokens.items(), key=lambda kv: kv[1])))  # type: ignore[arg-type]


def _token_names(folder: Path | None, error: Callable[[str], Exception]) -> tuple[dict[str, tuple[str, ...]], str | None]:
    """role → the token texts to look up, and the side file that named them (None: the default names)."""
    for name in SIDE_FILES if folder is not None else ():
        file = Path(folder) / name
        if not file.is_file():
            continue
        data = read_object(file, fix="restore it or delete it to use cram's token names", error=error)
        named = {role: _content(data.get(f"{role}_token")) for role in ROLES}
        missing = [role for role in REQUIRED if named[role] is None]
        if missing:
            raise error(f"{file}: names no {', '.join(f'{r}_token' for r in missing)}; add "
                        f"{' and '.join(repr(f'{r}_token') for r in missing)} (cram needs pad, cls, sep and mask)")
        return {role: (token,) if token else () for role, token in named.items()}, str(file)
    return dict(_ROLE_TOKENS), None


def _content(value: Any) -> str | None:
    """A special token as HF writes it: a string or an AddedToken dict with `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def check_config_ids(ids: SpecialIds, config: Mapping[str, Any], where: str) -> None:
    """Refuse a model config whose special-token ids (those it names) differ from its tokenizer's."""
    wrong = [f"{key}={config[key]} where the tokenizer says {value}" for key, value in ids.config_fields().items()
             if config.get(key) is not None and config[key] != value]
    if wrong:
        raise UsageError(f"{where}: {', '.join(wrong)}; the tokenizer.json beside it is not the one the model was "
                         "trained with: put that one there")


def new_tokenizer(normalization: NormalizationBudget) -> Tokenizer:
    """An untrained WordPiece tokenizer with the recipe's normaliser, pre-tokenizer, decoder."""
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = build_normalizer(normalization)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train_tokenizer(
    texts: Iterable[str],
    budget: TokenizerBudget,
    normalization: NormalizationBudget,
    *,
    vocab_size: int | None = None,
    length: int | None = None,
    what: Callable[[], str] = lambda: "the corpus",
) -> Tokenizer:
    """Train WordPiece on `texts` (streamed; the trainer keeps only word counts in memory)."""
    size = vocab_size or budget.vocab_size
    tok = new_tokenizer(normalization)
    trainer = trainers.WordPieceTrainer(
        vocab_size=size,
        min_frequency=budget.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    got = tok.get_vocab_size()
    if got < size:
        raise UsageError(
            f"vocab size {size} is larger than {what()} supports: only {got} tokens reach min_frequency"
            f" {budget.min_frequency}; lower --vocab-size / tokenizer.vocab_size or add more documents"
        )
    if got > size:  # WordPiece always keeps every character it saw, whatever vocab_size asks for
        raise UsageError(
            f"vocab size {size} is smaller than {what()} needs: its {len(SPECIAL_TOKENS)} special tokens and "
            f"characters alone make {got} tokens; raise --vocab-size / tokenizer.vocab_size"
        )
    canonicalize_ids(tok)
    add_post_processor(tok)
    check_special_ids(tok, "the trained tokenizer")
    return tok


def canonicalize_ids(tok: Tokenizer) -> None:
    """Renumber the vocabulary: special tokens 0..6, then the rest sorted.

    The trainer learns the same token set on every run, but numbers it in hash-map order, so ids (and the
    content hash of everything built on them) would change from run to run. WordPiece only looks tokens up,
    so any fixed numbering tokenizes identically."""
    rest = sorted(set(tok.get_vocab()) - set(SPECIAL_TOKENS))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + rest)}
    tok.model = models.WordPiece(vocab=vocab, unk_token="<unk>", continuing_subword_prefix="##")


def add_post_processor(tok: Tokenizer) -> None:
    tok.post_processor = processors.TemplateProcessing(
        single="$A <sep>",
        pair="<cls> $A <sep> $B:0 <sep>:0",
        special_tokens=[("<cls>", SPECIAL_IDS["<cls>"]), ("<sep>", SPECIAL_IDS["<sep>"])],
    )


def check_special_ids(tok: Tokenizer, where: str) -> None:
    wrong = [f"{t}={tok.token_to_id(t)}" for t, i in SPECIAL_IDS.items() if tok.token_to_id(t) != i]
    if wrong:
        expected = ", ".join(f"{t}={i}" for t, i in SPECIAL_IDS.items())
        raise UsageError(f"{where}: special-token ids {', '.join(wrong)} differ from cram's fixed ids ({expected})")


def tokenizer_hash(tok: Tokenizer) -> str:
    """Content hash of a tokenizer (its canonical JSON), used in the prepared data's content hash."""
    canonical = json.dumps(json.loads(tok.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A `tokenizer.json` (or a folder holding one) → `tokenizers.Tokenizer`; it must have the special tokens
    `special_ids` reads (at any ids: cram's own have the fixed ones, an original's wherever its hash put them)."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    tok = _read_tokenizer(file)
    special_ids(tok, str(file))
    return tok


def _read_tokenizer(file: Path, error: Callable[[str], Exception] = UsageError) -> Tokenizer:
    if not file.is_file():
        raise error(f"{file}: no tokenizer.json here; create one with `cram train-tokenizer --out FOLDER`")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust loader raises plain Exceptions with a serde message
        raise error(f"{file}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None


def to_hf_tokenizer(path: str | Path, model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """The tokenizer as a `transformers.PreTrainedTokenizerFast` with its special tokens named."""
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(path)
    ids, name = special_ids(tok), tok.id_to_token
    ends = {key: t for key, t in (("bos_token", "<s>"), ("eos_token", "</s>")) if tok.token_to_id(t) is not None}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        pad_token=name(ids.pad),
        unk_token=name(ids.unk),
        cls_token=name(ids.cls),
        sep_token=name(ids.sep),
        mask_token=name(ids.mask),
        **ends,
    )


def save_tokenizer(tok: Tokenizer, folder: Path, model_max_length: int = 128) -> Path:
    """Write `tokenizer.json` plus the HF side files, so `AutoTokenizer.from_pretrained(folder)` works too."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "tokenizer.json"
    with disk.os_errors(file):
        tok.save(str(file))
    to_hf_tokenizer(file, model_max_length).save_pretrained(str(folder))
    return file


def batched(texts: Iterable[str], size: int, max_chars: int = 1 << 62) -> Iterator[list[str]]:
    """Group a text stream into lists of at most `size` texts and about `max_chars` characters (what
    `encode_batch` and the workers like; the character cap bounds memory for long documents)."""
    batch: list[str] = []
    chars = 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if len(batch) == size or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch
