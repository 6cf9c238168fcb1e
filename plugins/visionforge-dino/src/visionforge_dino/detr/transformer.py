"""DETR's encoder-decoder transformer: positions added to queries and keys of every
attention, post-norm by default, the decoder returns every layer's (normed) output.

Parameter names are the original's (``self_attn``, ``multihead_attn``, ``linear1/2``,
``norm1..3``, ``decoder.norm``), so official checkpoints load without renaming. Tensors are
batch-first (``[B, L, C]``); attention runs through ``nn.MultiheadAttention`` without
returning weights, i.e. on ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Activation = Callable[[torch.Tensor], torch.Tensor]
ACTIVATIONS: dict[str, Activation] = {"relu": F.relu, "gelu": F.gelu}


def _with_pos(tensor: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return tensor if pos is None else tensor + pos


def _attend(
    attn: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
) -> torch.Tensor:
    return attn(query, key, value, key_padding_mask=key_padding_mask, need_weights=False)[0]


class EncoderLayer(nn.Module):
    """Self-attention + FFN, post-norm (``pre_norm=False``, the paper) or pre-norm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float,
        activation: str = "relu",
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]
        self.pre_norm = pre_norm

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self, src: torch.Tensor, padding_mask: torch.Tensor | None, pos: torch.Tensor | None
    ) -> torch.Tensor:
        if self.pre_norm:
            x = self.norm1(src)
            qk = _with_pos(x, pos)
            src = src + self.dropout1(_attend(self.self_attn, qk, qk, x, padding_mask))
            return src + self.dropout2(self._ffn(self.norm2(src)))
        qk = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(_attend(self.self_attn, qk, qk, src, padding_mask)))
        return self.norm2(src + self.dropout2(self._ffn(src)))


class DecoderLayer(nn.Module):
    """Self-attention of the queries, cross-attention to the memory, FFN."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float,
        activation: str = "relu",
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(
            d_model, nhead, dropout=dropout, batch_first=True
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]
        self.pre_norm = pre_norm

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None,
        pos: torch.Tensor | None,
        query_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        key = _with_pos(memory, pos)
        if self.pre_norm:
            x = self.norm1(tgt)
            qk = _with_pos(x, query_pos)
            tgt = tgt + self.dropout1(_attend(self.self_attn, qk, qk, x, None))
            x = self.norm2(tgt)
            cross = _attend(
                self.multihead_attn, _with_pos(x, query_pos), key, memory, memory_padding_mask
            )
            tgt = tgt + self.dropout2(cross)
            return tgt + self.dropout3(self._ffn(self.norm3(tgt)))
        qk = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(_attend(self.self_attn, qk, qk, tgt, None)))
        cross = _attend(
            self.multihead_attn, _with_pos(tgt, query_pos), key, memory, memory_padding_mask
        )
        tgt = self.norm2(tgt + self.dropout2(cross))
        return self.norm3(tgt + self.dropout3(self._ffn(tgt)))


class Encoder(nn.Module):
    def __init__(self, layer: EncoderLayer, num_layers: int, norm: nn.LayerNorm | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(
        self, src: torch.Tensor, padding_mask: torch.Tensor | None, pos: torch.Tensor | None
    ) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, padding_mask, pos)
        return src if self.norm is None else self.norm(src)


class Decoder(nn.Module):
    """Returns ``[num_layers, B, Q, C]``: every layer's output through the final norm."""

    def __init__(self, layer: DecoderLayer, num_layers: int, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None,
        pos: torch.Tensor | None,
        query_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_padding_mask, pos, query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class DetrTransformer(nn.Module):
    """``forward(src [B,C,H,W], mask [B,H,W], query_embed [Q,C], pos [B,C,H,W])`` ->
    decoder outputs ``[L, B, Q, C]``. Matrices are Xavier-initialized as in the original."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        sizes = (d_model, nhead, dim_feedforward, dropout, activation, pre_norm)
        self.encoder = Encoder(
            EncoderLayer(*sizes), num_encoder_layers, nn.LayerNorm(d_model) if pre_norm else None
        )
        self.decoder = Decoder(DecoderLayer(*sizes), num_decoder_layers, nn.LayerNorm(d_model))
        self.d_model = d_model
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, src: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        batch = src.shape[0]
        src = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        padding = mask.flatten(1)
        query_pos = query_embed.unsqueeze(0).expand(batch, -1, -1)
        memory = self.encoder(src, padding, pos)
        tgt = torch.zeros_like(query_pos)
        return self.decoder(tgt, memory, padding, pos, query_pos)
