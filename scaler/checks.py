"""System checks (stable ids) for the autoscaler: bounds and thresholds that contradict each other."""

from django.conf import settings
from django.core import checks


@checks.register("darkroom")
def check_scaler_settings(app_configs=None, **kwargs):
    problems = []

    def error(message: str, hint: str, id: str) -> None:
        problems.append(checks.Error(message, hint=hint, id=id))

    if settings.MIN_INSTANCES > settings.MAX_INSTANCES:
        error(
            "MIN_INSTANCES is above MAX_INSTANCES.", "Make MIN_INSTANCES <= MAX_INSTANCES.", "darkroom.E101"
        )
    if settings.SCALE_DOWN_THRESHOLD >= settings.SCALE_UP_THRESHOLD:
        error(
            "SCALE_DOWN_THRESHOLD is not below SCALE_UP_THRESHOLD: the workers would flap.",
            "Leave a gap, e.g. 2 and 10.",
            "darkroom.E102",
        )
    if settings.GATEWAY_MIN_INSTANCES > settings.GATEWAY_MAX_INSTANCES:
        error(
            "GATEWAY_MIN_INSTANCES is above GATEWAY_MAX_INSTANCES.",
            "Make GATEWAY_MIN_INSTANCES <= GATEWAY_MAX_INSTANCES.",
            "darkroom.E103",
        )
    if settings.GATEWAY_LOAD_THRESHOLD_DOWN >= settings.GATEWAY_LOAD_THRESHOLD_UP:
        error(
            "GATEWAY_LOAD_THRESHOLD_DOWN is not below GATEWAY_LOAD_THRESHOLD_UP: the gateways would flap.",
            "Leave a gap, e.g. 30 and 80.",
            "darkroom.E104",
        )
    if settings.SCALE_CHECK_INTERVAL <= 0:
        error("SCALE_CHECK_INTERVAL must be positive.", "Use seconds, e.g. 30.", "darkroom.E105")
    return problems
