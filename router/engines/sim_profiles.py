"""What the simulated GPU engine (``sim``) is calibrated from: one profile per model and GPU.

Every number below comes from ``../shared/notes/performance.md`` ("notes") unless marked
otherwise; "computed" means arithmetic from the model configs, "assumed" a figure with no
published source (kept small, named, and easy to change).

===========================  =====================  =====================  ================================
figure                       Plano-Orchestrator-4B  Plano-Orch.-30B-A3B    source
===========================  =====================  =====================  ================================
linear FLOPs / prompt token  7.27 GFLOP             5.46 GFLOP             notes, "The models" (computed)
attention FLOPs / token @ p  590k x p               786k x p               notes, "The models" (computed)
KV cache / token             144 KiB                96 KiB                 notes, "The models" (computed)
weights (bf16)               8 GB                   61 GB                  notes, "The models"
weights read / step          all 8 GB               3.1 GB + 58 GB x share notes: MoE floor 2 ms at batch 1,
                                                    of experts touched     18 ms all experts (computed)
experts / active per token   (dense)                128 / 8                Qwen3-30B-A3B config.json
H100 bf16 peak               989 TFLOP/s            989 TFLOP/s            notes
achieved share of peak       30%                    30%                    notes ("realistic"; 19-28% measured)
H100 memory bandwidth        3.35 TB/s              3.35 TB/s              H100 SXM datasheet (61 GB / 18 ms)
GPU memory x utilisation     80 GB x 0.9            80 GB x 0.9            vLLM default gpu_memory_utilization
max_num_batched_tokens       8,192                  8,192                  notes (API server, 80 GB GPUs)
max_num_seqs                 1,024                  1,024                  notes (80 GB GPUs)
prefix cache block           16 tokens              16 tokens              notes (GPU block size)
step overhead                1.0 ms                 1.0 ms                 assumed (scheduler, launch)
per-sequence step overhead   5 us                   5 us                   assumed (sampling, grammar mask)
===========================  =====================  =====================  ================================

Checks of the resulting model against the notes' anchors are in ``tests/unit/test_sim_model.py``:
the 4B ceiling at 1k prompt tokens with 800 cached (notes: 173/s), one 4B decision alone
(Plano's "sub-100 ms"), and ten concurrent 2k-token 30B-A3B requests (vLLM PR 23151: mean time
to first token 267 ms, p99 455 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "Profile", "Shape"]

_H100_FLOPS = 989e12 * 0.30
_H100_BYTES_PER_S = 3.35e12
_H100_KV_BYTES = 80e9 * 0.9
_KIB = 1024


@dataclass(frozen=True, slots=True)
class Shape:
    """A typical request: prompt tokens, of which the catalog prefix (cacheable), and answer tokens."""

    prompt: float = 1000.0
    prefix: float = 800.0
    answer: float = 20.0


@dataclass(frozen=True, slots=True)
class Profile:
    """One model on one GPU, as the discrete-event model (``sim_model``) needs it."""

    name: str
    model: str
    linear_flops: float
    """FLOPs per token through the weights."""
    attention_flops: float
    """FLOPs per token per earlier position (attention at position p costs ``p`` times this)."""
    kv_bytes: float
    """KV cache bytes per token (read once per step for each running sequence's context)."""
    shared_bytes: float
    """Weight bytes every step reads (all of them for a dense model)."""
    expert_bytes: float = 0.0
    """Expert weight bytes (MoE): a step reads the share its tokens touch."""
    experts: int = 1
    active_experts: int = 1
    flops_per_s: float = _H100_FLOPS
    bytes_per_s: float = _H100_BYTES_PER_S
    kv_capacity_bytes: float = _H100_KV_BYTES
    """GPU memory vLLM may use (weights and KV cache)."""
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 1024
    block_size: int = 16
    step_overhead_s: float = 1.0e-3
    seq_overhead_s: float = 5e-6
    reference: Shape = Shape()
    """The shape the ceiling is quoted for until requests have been seen (notes' headline case)."""

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache that fit beside the weights."""
        return int((self.kv_capacity_bytes - self.shared_bytes - self.expert_bytes) / self.kv_bytes)

    def weight_bytes(self, tokens: int) -> float:
        """Weight bytes one step reads when it processes ``tokens`` tokens."""
        if self.expert_bytes == 0.0 or tokens <= 0:
            return self.shared_bytes + (self.expert_bytes if tokens > 0 else 0.0)
        untouched = (1.0 - self.active_experts / self.experts) ** tokens
        return self.shared_bytes + self.expert_bytes * (1.0 - untouched)


PLANO_4B_H100 = Profile(
    name="plano-4b-h100",
    model="katanemo/Plano-Orchestrator-4B",
    linear_flops=7.27e9,
    attention_flops=590e3,
    kv_bytes=144 * _KIB,
    shared_bytes=8e9,
)

PLANO_30B_A3B_H100 = Profile(
    name="plano-30b-a3b-h100",
    model="katanemo/Plano-Orchestrator-30B-A3B",
    linear_flops=5.46e9,
    attention_flops=786e3,
    kv_bytes=96 * _KIB,
    shared_bytes=3.1e9,  # 2 ms x 3.35 TB/s (batch-1 floor) minus 8/128 of the experts
    expert_bytes=58e9,  # 61 GB of weights less the shared part; 18 ms x 3.35 TB/s with all experts
    experts=128,
    active_experts=8,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (PLANO_4B_H100, PLANO_30B_A3B_H100)}
"""The profiles ``ROUTEYARD_SIM__PROFILE`` may name."""
