"""processing.worker.progress: a job's bar cut into its stages' shares, by what each is expected to cost."""

import pytest

from processing.worker.progress import Costs, Stages


def bar(costs: Costs) -> tuple[Stages, list[float]]:
    reported: list[float] = []
    return Stages(reported.append, costs), reported


@pytest.mark.parametrize(
    ("costs", "shares"),
    [
        # A 12 MP JPEG sharpened to a PNG: the encode is most of the work, and of the bar.
        (
            Costs.of(
                input_format="JPEG",
                decoded_pixels=12_000_000,
                operation_ns=70 * 12_000_000,
                output_format="png",
                output_pixels=12_000_000,
            ),
            {"decode": (0.0, 0.0132), "operation": (0.0132, 0.2434), "encode": (0.2434, 1.0)},
        ),
        # The same to a JPEG: the operation is.
        (
            Costs.of(
                input_format="jpeg",
                decoded_pixels=12_000_000,
                operation_ns=70 * 12_000_000,
                output_format="jpeg",
                output_pixels=12_000_000,
            ),
            {"decode": (0.0, 0.05), "operation": (0.05, 0.925), "encode": (0.925, 1.0)},
        ),
        # format=auto negotiated AVIF, with its JPEG fallback after it.
        (
            Costs.of(
                input_format="jpeg",
                decoded_pixels=1_000_000,
                operation_ns=0 * 1_000_000,
                output_format="avif",
                output_pixels=1_000_000,
                fallback_format="jpeg",
            ),
            {"decode": (0.0, 0.0118), "operation": (0.0118, 0.0118), "encode": (0.0118, 0.9824)},
        ),
        # A report: no encode at all.
        (
            Costs.of(
                input_format="png",
                decoded_pixels=1_000_000,
                operation_ns=19 * 1_000_000,
                output_format="",
                output_pixels=0,
            ),
            {"decode": (0.0, 0.4571), "operation": (0.4571, 1.0), "encode": (1.0, 1.0)},
        ),
        # What was never measured counts as UNMEASURED_NS a pixel, not as nothing.
        (
            Costs.of(
                input_format="jxl",
                decoded_pixels=1_000,
                operation_ns=20 * 1_000,
                output_format="gif",
                output_pixels=1_000,
            ),
            {"decode": (0.0, 0.3333), "operation": (0.3333, 0.6667), "encode": (0.6667, 1.0)},
        ),
    ],
    ids=["jpeg to png", "jpeg to jpeg", "auto with a fallback", "a report", "unmeasured formats"],
)
def test_each_stage_gets_the_share_of_the_bar_its_cost_is_of_the_job(costs, shares):
    stages, _ = bar(costs)
    for name, (start, end) in shares.items():
        assert stages.shares[name] == pytest.approx((start, end), abs=1e-4)
    assert stages.shares["fallback"][1] == 1.0


def test_a_stage_reports_within_its_share_and_its_end_when_done():
    stages, reported = bar(Costs(decode=1, operation=2, encode=1))
    stages.done("decode")
    operation = stages.stage("operation")
    operation(0.5)
    operation(1.0)
    stages.stage("encode")(0.5)
    stages.done("encode")
    assert reported == [0.25, 0.5, 0.75, 0.875, 1.0]


def test_a_job_whose_stages_cost_nothing_moves_its_bar_a_third_at_each():
    stages, reported = bar(Costs(decode=0, operation=0, encode=0))
    for name in ("decode", "operation", "encode"):
        stages.done(name)
    assert reported == pytest.approx([1 / 3, 2 / 3, 1.0])
