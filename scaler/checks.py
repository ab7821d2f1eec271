"""System checks (stable ids) for the autoscaler: bounds and thresholds that contradict each other.

The rules themselves are declared with the settings, in project/config.py (RULES).
"""

from django.core import checks

from project import config
from project.checks import rule_errors

SCALER_GROUPS = (config.SCALER_WORKERS, config.SCALER_GATEWAYS, config.SCALER_PROCESS)


@checks.register("darkroom")
def check_scaler_settings(app_configs=None, **kwargs):
    return rule_errors(SCALER_GROUPS)
