"""The ``head`` discriminator: the original design, a small Transformer head on a frozen encoder's states."""

from __future__ import annotations

import torch
from torch import nn

from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.encoder import ENCODE_PAD_MULTIPLE, FrozenEncoder
from gan_rl.discriminator.pair_tokenizer import PairTokenizer
from gan_rl.types import Pair
from gan_rl.utils.distributed import max_across_ranks
from gan_rl.utils.padding import right_pad


class HeadDiscriminator(Discriminator):
    """The original design: frozen encoder states -> Transformer encoder (-> LSTM) -> linear -> logit.

    The head attends over prompt and response but pools over response tokens only (when conditional), so
    the shared prompt cannot dilute the evidence.
    """

    def __init__(
        self, config: DiscriminatorConfig, encoder: FrozenEncoder, encode_batch_size: int = 32
    ) -> None:
        super().__init__(config)
        self.encoder = encoder  # a plain object: not a submodule, not in state_dict
        self.encode_batch_size = encode_batch_size
        self.proj = nn.Linear(encoder.hidden_size, config.d_model)
        self.input_norm = nn.LayerNorm(config.d_model)
        if config.num_layers > 0:
            layer = nn.TransformerEncoderLayer(
                config.d_model,
                config.num_heads,
                dim_feedforward=4 * config.d_model,
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        else:
            self.transformer = None
        self.lstm = (
            nn.LSTM(config.d_model, config.lstm_hidden, batch_first=True, bidirectional=True)
            if config.lstm
            else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * config.lstm_hidden if config.lstm else config.d_model, 1)
        self._tokens: PairTokenizer | None = None

    # -- tokenisation -------------------------------------------------------------------------------

    @property
    def tokens(self) -> PairTokenizer:
        """The pair tokenizer of the encoder (built on first use: ``encoder: generator`` binds late)."""
        if self._tokens is None or self._tokens.tokenizer is not self.encoder.tokenizer:
            self._tokens = PairTokenizer(self.config, self.encoder.tokenizer, self.encoder.generator_format)
        return self._tokens

    def _tokenize(self, pair: Pair) -> tuple[list[int], int]:
        return self.tokens(pair)

    @property
    def collective_featurize(self) -> bool:
        return self.encoder.sharded

    def _featurize(self, pairs: list[Pair]) -> list[dict[str, torch.Tensor]]:
        tokenized = [self._tokenize(p) for p in pairs]
        pad_id = self.encoder.tokenizer.pad_token_id or 0
        device = self.encoder.device
        # Encode in chunks of similar length (little padding), then restore the original order. Each
        # chunk is padded to a multiple of ENCODE_PAD_MULTIPLE tokens: see its comment.
        order = sorted(range(len(tokenized)), key=lambda i: len(tokenized[i][0]))
        out: list[dict[str, torch.Tensor]] = [None] * len(tokenized)  # type: ignore[list-item]
        if self.encoder.sharded:
            # Lockstep by construction: each forward is a collective (ZeRO-3, FSDP), and how many chunks a
            # rank has depends on its own data (e.g. its misses in the real-feature cache). Every rank runs
            # as many forwards as the busiest one; the extra ones encode a one-token dummy and are dropped.
            # A real chunk is encoded exactly as without them, so features keep their bits.
            mine = -(-len(order) // self.encode_batch_size)
            for _ in range(max_across_ranks(mine) - mine):
                self._encode_dummy(pad_id, device)
        for start in range(0, len(order), self.encode_batch_size):
            index = order[start : start + self.encode_batch_size]
            chunk = [tokenized[i] for i in index]
            multiple = ENCODE_PAD_MULTIPLE
            limit = self.encoder.position_limit
            if limit is not None and -(-len(chunk[-1][0]) // multiple) * multiple > limit:
                multiple = 1  # the table ends first: as wide as the longest pair (sorted: the last)
            input_ids, attention = right_pad([ids for ids, _ in chunk], pad_id, multiple)
            hidden = self.encoder(input_ids.to(device), attention.to(device)).cpu()
            for i, (ids, n_prompt) in enumerate(chunk):
                response_mask = torch.zeros(len(ids), dtype=torch.bool)
                response_mask[n_prompt:] = True
                out[index[i]] = {"hidden": hidden[i, : len(ids)].clone(), "response_mask": response_mask}
        return out

    def _encode_dummy(self, pad_id: int, device: torch.device) -> None:
        """One encoder forward whose result is dropped: a rank's share of a collective it has no data for."""
        tok = self.encoder.tokenizer
        start = next((t for t in (tok.bos_token_id, tok.eos_token_id, pad_id) if t is not None), 0)
        limit = self.encoder.position_limit
        multiple = min(ENCODE_PAD_MULTIPLE, limit) if limit is not None else ENCODE_PAD_MULTIPLE
        input_ids, attention = right_pad([[start]], pad_id, multiple)
        self.encoder(input_ids.to(device), attention.to(device))

    # -- trainable part -----------------------------------------------------------------------------

    def collate(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(f["hidden"].shape[0] for f in features)
        batch = len(features)
        hidden = torch.zeros(batch, length, self.encoder.hidden_size)
        valid = torch.zeros(batch, length, dtype=torch.bool)
        pool = torch.zeros(batch, length, dtype=torch.bool)
        for i, f in enumerate(features):
            n = f["hidden"].shape[0]
            hidden[i, :n] = f["hidden"].float()
            valid[i, :n] = True
            # An empty response has nothing to pool over: fall back to the whole sequence.
            pool[i, :n] = f["response_mask"] if f["response_mask"].any() else True
        device = self.device
        return {"hidden": hidden.to(device), "valid": valid.to(device), "pool": pool.to(device)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.input_norm(self.proj(batch["hidden"]))
        valid = batch["valid"]
        if self.transformer is not None:
            x = self.transformer(x, src_key_padding_mask=~valid)
        if self.lstm is not None:
            lengths = valid.sum(dim=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=valid.shape[1])
        pool = batch["pool"].unsqueeze(-1).to(x.dtype)
        pooled = (x * pool).sum(dim=1) / pool.sum(dim=1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled)).squeeze(-1)
