"""How long denoising and decoding take, per request size, and the deadline check at each denoising step.

Time is measured per U-Net call (`Pacer.estimate` takes the request's count: PNDM, SD 1.5's default
scheduler, runs one more than num_inference_steps) and per decode. On CUDA a step callback runs when
the step's kernels are queued, not run: at the last step it synchronizes, so the decode is timed alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .service import NotEnoughTime
from .validation import GenerationParams

Shape = tuple[int, bool]
# A pace is recorded only from requests this many U-Net calls long, without the first call (which
# carries the request's warm-up): a request stopped at its second call would overstate the pace.
MIN_PACED_CALLS = 4
# The decode time of a size is the least of its last few decodes, not counting its first (warm-up).
DECODE_SAMPLES = 3


class Pacer:
    """Seconds per U-Net call and per decode, measured on recent requests of each shape (see `shape`)."""

    def __init__(
        self, clock: Callable[[], float], synchronize: Callable[[], None], finish_reserve: Callable[[GenerationParams], float]
    ) -> None:
        self.clock = clock
        self.synchronize = synchronize
        # What the caller's deadline leaves after denoising (budget.finish_seconds).
        self._finish_reserve = finish_reserve
        self._call_seconds: dict[Shape, float] = {}
        self._decoded_once: set[Shape] = set()
        self._decodes: dict[Shape, deque[float]] = {}

    @staticmethod
    def shape(params: GenerationParams) -> Shape:
        """What a step's cost depends on: the pixels denoised, and whether classifier-free guidance
        doubles the U-Net's batch (diffusers guides only with guidance_scale > 1)."""
        return params.width * params.height * params.num_images, params.guidance_scale > 1

    def estimate(self, params: GenerationParams, unet_calls: int) -> float | None:
        """Denoising time of `unet_calls` at the pace measured on its shape; None before a measurement.

        Only the same shape is trusted: a step's cost does not scale simply with the pixels.
        """
        seconds = self._call_seconds.get(self.shape(params))
        return None if seconds is None else seconds * unet_calls

    def decode_excess(self, params: GenerationParams) -> float:
        """How much longer than the whole reserve after denoising this shape's decode takes (0 unmeasured).

        The reserve is set for GPUs; where decoding is slower (the CPU), denoising must end earlier
        by the difference for the request to answer within its limit.
        """
        samples = self._decodes.get(self.shape(params))
        return max(0.0, min(samples) - self._finish_reserve(params)) if samples else 0.0

    def check(self, params: GenerationParams, unet_calls: int, deadline: float) -> None:
        """Raises NotEnoughTime if, at the measured pace, denoising and decoding would end past `deadline`."""
        needed = self.estimate(params, unet_calls)
        if needed is None:
            return
        excess = self.decode_excess(params)
        left = deadline - self.clock()
        if needed + excess <= left:
            return
        if needed <= left:
            # Refused for its decode alone, which refusals never re-measure: the next request of this
            # size runs without it and measures it again, so one slow decode cannot lock a size out.
            self.forget_decode(params)
        raise NotEnoughTime(needed + excess, left)

    def forget_decode(self, params: GenerationParams) -> None:
        self._decodes.pop(self.shape(params), None)

    def start(self, params: GenerationParams, deadline: float) -> PacedCall:
        return PacedCall(self, params, deadline)

    def record_calls(self, params: GenerationParams, seconds: float) -> None:
        self._call_seconds[self.shape(params)] = seconds

    def record_decode(self, params: GenerationParams, seconds: float) -> None:
        shape = self.shape(params)
        if shape not in self._decoded_once:
            self._decoded_once.add(shape)  # the first decode of a size carries warm-up (fp32 upcast, kernels)
            return
        self._decodes.setdefault(shape, deque(maxlen=DECODE_SAMPLES)).append(seconds)


class PacedCall:
    """The timing of one generation: the step callback asks `should_stop`; then `stopped` or `finished`."""

    def __init__(self, pacer: Pacer, params: GenerationParams, deadline: float) -> None:
        self._pacer = pacer
        self._params = params
        self._deadline = deadline
        # Denoising must end earlier by what the decode takes beyond the reserve.
        self._excess = pacer.decode_excess(params)
        self._started = pacer.clock()
        self._first: float | None = None
        self._last = self._started
        self._done = 0
        self._total = 0
        self._only_for_the_decode = False

    def should_stop(self, done: int, total: int) -> bool:
        """After U-Net call `done` of `total`: whether the calls left, at the pace so far, would end past the deadline."""
        if done == total:
            self._pacer.synchronize()  # the queued steps run now, so that the decode is timed alone
        now = self._pacer.clock()
        self._done, self._total, self._last = done, total, now
        if done == 1:
            self._first = now
        # From the second call on (the first carries warm-up), and in any case at the deadline.
        projected = now + (now - self._started) / done * (total - done)

        def late(deadline: float) -> bool:
            return now > deadline or (done >= 2 and projected > deadline)

        stop = late(self._deadline - self._excess)
        self._only_for_the_decode = stop and not late(self._deadline)
        return stop

    def _record_calls(self) -> None:
        if self._first is not None and self._done >= MIN_PACED_CALLS:
            self._pacer.record_calls(self._params, (self._last - self._first) / (self._done - 1))

    def stopped(self) -> None:
        self._record_calls()
        if self._only_for_the_decode:
            self._pacer.forget_decode(self._params)  # as in Pacer.check: never a lock-out

    def finished(self) -> None:
        self._record_calls()
        if self._done and self._done == self._total:
            self._pacer.record_decode(self._params, self._pacer.clock() - self._last)
