"""The autoscaler: a pure scaling policy, backends that apply it, and `manage.py scale_workers`."""
