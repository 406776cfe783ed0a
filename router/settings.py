"""The engines' settings: plain pydantic models, no engine code.

``routeyard.consumers.settings`` nests them (``ROUTEYARD_SEMANTIC__*``, ``ROUTEYARD_OPENAI__*``,
``ROUTEYARD_VLLM__*``, ``ROUTEYARD_SIM__*``); they live apart from their engines so that reading settings imports no
engine, HTTP client or model runtime. Each engine module re-exports its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "CLOSINGS",
    "DEFAULT_MODEL",
    "REPLY_OPENERS",
    "REPLY_THANKS",
    "SMALL_TALK",
    "TASK_CLOSERS",
    "OpenAIConstraint",
    "OpenAISettings",
    "SemanticSettings",
    "SimSettings",
    "VllmConstraint",
    "VllmSettings",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""The semantic engine's bundled embedding model."""

OpenAIConstraint = Literal["plano_grammar", "json_schema", "none"]
VllmConstraint = Literal["json_schema", "plano_grammar"]

_CLOSINGS = """
thanks | thank you very much | thanks, that's all I need | no, that is all, thank you | nothing else, thanks
that's everything, thank you | goodbye | bye, see you later | have a nice day | ok, great, thanks for your help
"""
_SMALL_TALK = """
hello | hi there | good morning | how are you? | how is it going? | what's up? | nice to meet you | I'm bored
tell me a joke | say something funny | tell me an interesting fact | what is the meaning of life?
what's your name? | who are you? | are you a robot or a human? | how old are you? | where do you live?
who created you? | who is your boss? | what company built you? | do you have any pets?
what are your hobbies? | what is your favorite color? | do you have feelings? | what can you do?
what can I ask you?
"""


def _phrases(block: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(r"[|\n]", block) if p.strip())


CLOSINGS = _phrases(_CLOSINGS)
"""The user is done: a turn that is one of these, more than a request to any agent, gets no route."""
SMALL_TALK = _phrases(_SMALL_TALK)

REPLY_OPENERS = _phrases("""
ok | okay | thanks | thank you | thx | i appreciate | appreciate it | great | perfect | sounds good | sounds great
that sounds | that's fine | that's great | that's good | that's perfect | that works | that is fine | that is great
that is good | that is perfect | that one | this one | no | nope | not now | not right now | not at the moment
maybe later | nah | cool | fine | awesome | wonderful | excellent | good | yes | yeah | sure | alright | all right
""")
"""How a reply to the assistant's last message opens (matched as whole words at the message's start)."""
REPLY_THANKS = _phrases("""
thanks | thank you | thx | appreciate
""")
"""Thanks in a reply's first sentence: the answer the user thanks for is done."""
TASK_CLOSERS = _phrases("""
anything else | something else | further assist | more help | else can i | else i can | anything more
help you with anything | assist you with anything | need anything | other help | help you out some more
help with anything | is there any other | booked | booking was successful | successfully | reference number
confirmed | is complete | has been made | has been placed | has been booked | has been reserved | all set
went through | is done | on its way | on the way
""")
"""An assistant message with one of these closed its agent's task: a reply to it hands nothing back."""
"""Greetings, small talk, questions about the assistant: no agent's business (less telling mid-task)."""


class SemanticSettings(BaseModel):
    """The model and the thresholds of the semantic engine (defaults fitted by
    ``routeyard.router.evaluation.tuning``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    """``all-MiniLM-L6-v2`` (bundled) or a sentence-transformers folder."""
    cache_dir: Path | None = None
    """Where the ONNX model built from the weights is kept (None: ``~/.cache/routeyard/onnx``)."""
    threads: int = Field(default=2, ge=1)
    """Cores the encoder uses: that many single-threaded ONNX Runtime calls at once."""
    batch_size: int = Field(default=8, ge=1)
    """Texts per ONNX Runtime call (sorted by length first: small batches waste little padding)."""
    quantize: bool = True
    """int8 matrix products: faster where the CPU has VNNI, the same accuracy on the development
    sets (bench/README.md); False runs the exact fp32 model."""
    min_similarity: float = 0.1
    negative_weight: float = Field(default=0.6, ge=0)
    closing_similarity: float = 0.4
    closing_margin: float = 0.2
    small_talk_in_context: float = Field(default=0.5, ge=0, le=1)
    extra_margin: float = Field(default=0.0, ge=0)
    clause_min_similarity: float = 0.25
    clause_margin: float = 0.2
    context_weight: float = Field(default=0.2, ge=0, le=1)
    weak_context_weight: float = Field(default=1.0, ge=0, le=1)
    weak_similarity: float = 0.3
    strong_similarity: float = 0.5
    context_decay: float = Field(default=1.0, ge=0, le=1)
    """Weight of each earlier user message relative to the one after it."""
    context_turns: int = Field(default=3, ge=0)
    assistant_weight: float = Field(default=0.0, ge=0, le=1)
    """Share of the assistant message in the context (0, the default: it is not encoded at all).
    The assistant message is the longest text a live decision encodes (45% of its tokens), and the
    encoder's time goes with its tokens: 0 is about 1.7x the decisions/s of 0.3. What the message
    carried is mostly taken up by rules on its text: the continuation policy sends the answer to a
    question back to the agent that asked, and ``closed_context``, ``handover`` and ``stay_margin``
    read whether its task is open. 0.3 is 0.3-0.6 points more accurate on the development files
    (SGD distract4 87.7 against 87.1, MultiWOZ 87.9 against 87.6; bench/README.md, issue 19)."""
    assistant_words: int = Field(default=24, ge=1)
    """Only the end of the assistant message counts (its question, usually)."""
    max_routes: int = Field(default=3, ge=1)
    use_examples: bool = True
    prototype_template: str = "help me with {}"
    """How description sentences and capability items are phrased as prototypes."""
    closings: tuple[str, ...] = CLOSINGS
    small_talk: tuple[str, ...] = SMALL_TALK
    text_cache: int = Field(default=8192, ge=0)
    """How many vectors of recent conversation texts are kept."""
    switch_margin: float = Field(default=0.1, ge=0)
    """A message switches away from the previous agent when its own best agent is this far ahead of it."""
    switch_min_similarity: float = 0.45
    """... and its own best agent is at least this close to it."""
    handover: bool = True
    """On a switch that opens with a reply to the previous agent's open task, route to both."""
    reply_openers: tuple[str, ...] = REPLY_OPENERS
    closed_context: float = Field(default=0.3, ge=0, le=1)
    """After an assistant message that closed its agent's task (``task_closers``), the context counts
    this much of its usual weight: the next message starts a new request more often than not."""
    reply_thanks: tuple[str, ...] = REPLY_THANKS
    """A reply whose first sentence thanks the assistant ("Great, thanks. Now a taxi") takes note of a
    finished answer: it hands nothing back to the previous agent."""
    task_closers: tuple[str, ...] = TASK_CLOSERS
    stay_margin: float = Field(default=0.05, ge=0)
    """While the previous agent's task is open (its last message closed nothing), a message that
    names no other agent clearly stays with it: when the chosen agent's own similarity is less than
    this far above the previous agent's, the previous agent takes the turn instead ("Can I have
    the phone number?" after "Ballare is my favourite": the nightclub's agent). 0: off."""


SimProfileName = Literal["plano-4b-h100", "plano-30b-a3b-h100"]
"""The calibrated profiles of ``routeyard.router.engines.sim_profiles``."""


class SimSettings(BaseModel):
    """The simulated GPU engine ``sim`` (``ROUTEYARD_SIM__*``): vLLM's timing, another engine's decisions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: SimProfileName = "plano-4b-h100"
    """The model and GPU simulated."""
    inner: Literal["rules", "semantic"] = "rules"
    """The engine whose decisions the simulator returns (it supplies only the timing)."""
    max_num_seqs: int | None = Field(default=None, ge=1, le=65_536)
    """vLLM's sequence budget (None: the profile's, 1,024)."""
    max_num_batched_tokens: int | None = Field(default=None, ge=16, le=1_048_576)
    """vLLM's token budget per step (None: the profile's, 8,192)."""
    speed: float = Field(default=1.0, gt=0, le=1000)
    """How many times faster than the profile's GPU to run (e.g. 10 for quick tests)."""


class OpenAISettings(BaseModel):
    """Where the server is and how to ask it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "katanemo/Plano-Orchestrator-4B"
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    """Per attempt, the whole exchange (connect to last byte)."""
    max_concurrency: int = Field(default=16, ge=1)
    """Requests in flight at once for this generator (so for any one batch)."""
    retries: int = Field(default=3, ge=0)
    """Further attempts after the first, for retriable failures only."""
    backoff_s: float = Field(default=0.2, ge=0)
    backoff_max_s: float = Field(default=5.0, ge=0)
    retry_after_max_s: float = Field(default=30.0, ge=0)
    """A server asking to wait longer than this gets no retry: the request fails at once."""
    max_tokens: int = Field(default=48, ge=1)
    temperature: float = Field(default=0.01, ge=0)
    """Plano's."""
    constraint: OpenAIConstraint = "plano_grammar"
    max_routes: int | None = Field(default=None, ge=0)
    """At most this many routes per answer (default: as many as the turn has agents)."""
    logprobs: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    """vLLM's ``chat_template_kwargs``, sent when set (e.g. ``{"enable_thinking": False}``); Plano sends none."""


class VllmSettings(BaseModel):
    """How to run the model (``ROUTEYARD_VLLM__*``). ``engine_kwargs`` go to ``AsyncEngineArgs`` as they are."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: str = "katanemo/Plano-Orchestrator-4B"
    tokenizer: str | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    max_tokens: int = 48
    temperature: float = 0.01
    """Plano's."""
    max_num_seqs: int | None = None
    enable_prefix_caching: bool = True
    block_size: int | None = None
    structured_output_backend: str = "xgrammar"
    constraint: VllmConstraint = "plano_grammar"
    max_routes: int | None = None
    """At most this many routes per answer (default: as many as the turn has agents)."""
    seed: int = 0
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncEngineArgs``."""
        args: dict[str, Any] = {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
            "enable_prefix_caching": self.enable_prefix_caching,
            "seed": self.seed,
            "disable_log_stats": False,
            "structured_outputs_config": {
                "backend": self.structured_output_backend,
                "disable_any_whitespace": True,
            },
        }
        if self.max_num_seqs is not None:
            args["max_num_seqs"] = self.max_num_seqs
        if self.block_size is not None:
            args["block_size"] = self.block_size
        return {**args, **self.engine_kwargs}
