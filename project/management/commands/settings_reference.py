from django.core.management.base import BaseCommand, CommandError

from project import config


class Command(BaseCommand):
    help = (
        "Write docs/settings.md, the reference of every environment variable, from its declaration in "
        "project/config.py. With --check, only say whether the file is current."
    )
    requires_system_checks = []  # it documents the settings: a wrong value must not stop it

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="fail when docs/settings.md is not current")

    def handle(self, check: bool, **options):
        current = config.reference()
        if check:
            if not config.REFERENCE.exists() or config.REFERENCE.read_text() != current:
                raise CommandError(
                    f"{config.REFERENCE.name} is not current: run manage.py settings_reference"
                )
            return
        config.REFERENCE.parent.mkdir(exist_ok=True)
        config.REFERENCE.write_text(current)
        self.stdout.write(f"wrote {config.REFERENCE.relative_to(config.BASE_DIR)}")
