"""Every setting Darkroom reads from the environment, declared once: name, type, default, bounds,
what it does, and its group.

Everything else is derived from this table:
- project/settings.py: `load(os.environ)` parses and checks each value, and every setting becomes a
  Django setting of the same name (unless it is marked `django=False`);
- `manage.py scale_workers` and `run_workers`: a setting with a `flag` is also that command-line
  flag, whose default is the setting's value and whose help is its description;
- the start-up checks: a value out of its bounds stops the start naming the variable, and the
  `RULES` between settings are Django system checks with stable ids;
- docs/settings.md, written by `manage.py settings_reference` (a test fails when it is not current).

Django-free on purpose (gunicorn's configuration and the scaler's policy read it too).
"""

import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

from processing.jobs import pools

BASE_DIR = Path(__file__).resolve().parent.parent


# --- Types: each parses the raw text of a variable, naming it when the text is wrong ---------------
@dataclass(frozen=True)
class Type:
    label: str  # how docs/settings.md names the type
    parse: Callable[[str, str], Any]  # (variable, raw text) -> value; raises ImproperlyConfigured
    show: Callable[[Any], str] = str  # a value as one writes it in the environment


def parse_str(name: str, raw: str) -> str:
    return raw


def parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def parse_bool(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def parse_rate(name: str, raw: str) -> str:
    """A rate limit such as 60/m (per second, minute, hour or day)."""
    if not re.fullmatch(r"\d+/\d*[smhd]", raw):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate like 60/m, 1000/h or 10/s")
    return raw


def parse_list(name: str, raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_addresses(name: str, raw: str) -> list[str]:
    """IP addresses or networks (10.0.0.0/8), as uvicorn's --forwarded-allow-ips takes them too."""
    addresses = parse_list(name, raw)
    for address in addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {address!r} is not an IP address or network") from None
    return addresses


def parse_traffic_split(name: str, raw: str) -> dict:
    try:
        return pools.parse_split(raw)
    except pools.SplitError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def show_traffic_split(value: dict) -> str:
    return "; ".join(
        f"{service}: " + ", ".join(f"{share.pool} {share.weight}" for share in shares)
        for service, shares in value.items()
    )


def parse_header(name: str, raw: str) -> tuple[str, str] | None:
    """A request header and the value that marks a request as HTTPS, written "X-Forwarded-Proto: https";
    as Django's SECURE_PROXY_SSL_HEADER wants it: ("HTTP_X_FORWARDED_PROTO", "https"). None when empty."""
    if not raw:
        return None
    match = re.fullmatch(r"\s*([A-Za-z0-9-]+)\s*:\s*(\S+)\s*", raw)
    if not match:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a header and value like 'X-Forwarded-Proto: https'"
        )
    header, value = match.groups()
    return "HTTP_" + header.upper().replace("-", "_"), value


def parse_presets(name: str, raw: str) -> dict[str, dict[str, Any]]:
    """Named recipes as a JSON object: {"name": {"description": ..., "steps": [...], "format": ...}}.
    Only the shape is read here; whether each name and recipe is one the presets take is a system
    check (darkroom.E007), as the operations are not loaded with the settings."""
    try:
        presets = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not JSON: {exc}") from None
    if not isinstance(presets, dict):
        raise ImproperlyConfigured(f'{name} must be a JSON object: {{"name": {{"steps": [...]}}, ...}}')
    for preset, recipe in presets.items():
        if not isinstance(recipe, dict) or not isinstance(recipe.get("steps"), list):
            raise ImproperlyConfigured(f'{name}: {preset!r} must be an object with "steps": [...]')
    return presets


def show_presets(value: dict[str, Any]) -> str:
    return json.dumps(value)


# The presets of the embedded default (docs/recipes.md): what the lite page offers out of the box.
DEFAULT_PRESETS = {
    "avatar": {
        "description": "A 256-pixel square, cut where the subject is, as WebP.",
        "steps": [
            {"service": "thumbnail", "parameters": {"size": 256, "square": True, "gravity": "attention"}}
        ],
        "format": "webp",
        "quality": 80,
    },
    "web": {
        "description": "At most 1600 pixels wide, lightly sharpened, in the best format the browser takes.",
        "steps": [
            {"service": "resize", "parameters": {"width": 1600, "fit": "inside"}},
            {"service": "sharpen", "parameters": {"radius": 1, "percent": 80}},
        ],
        "format": "auto",
        "quality": 80,
    },
    "small": {
        "description": "At most 640 pixels and 60 KB, for a slow connection.",
        "steps": [{"service": "thumbnail", "parameters": {"size": 640}}],
        "format": "auto",
        "max_bytes": 60_000,
    },
}


def parse_path(name: str, raw: str) -> Path:
    return Path(raw)


def parse_uri_prefix(name: str, raw: str) -> str:
    """A path that begins and ends with a slash, such as /_results/; empty when unset."""
    if raw and not re.fullmatch(r"/([A-Za-z0-9._~-]+/)+", raw):
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a path like /_results/ (starting and ending with /)"
        )
    return raw


def url(*schemes: str) -> Type:
    """An optional URL whose scheme must be one of `schemes`; empty when unset."""

    def parse(name: str, raw: str) -> str:
        if raw and urlparse(raw).scheme not in schemes:
            raise ImproperlyConfigured(f"{name} must start with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return Type(f"URL ({', '.join(s + '://' for s in schemes)})", parse)


def choice(*options: str) -> Type:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise ImproperlyConfigured(f"{name}={raw!r} is not {' or '.join(options)}")
        return raw

    return Type(" or ".join(options), parse)


def show_float(value: float) -> str:
    return f"{value:g}"


def show_bool(value: bool) -> str:
    return "true" if value else "false"


def show_list(value: list[str]) -> str:
    return ",".join(value)


def show_header(value: tuple[str, str] | None) -> str:
    return "" if value is None else f"{value[0].removeprefix('HTTP_').replace('_', '-').title()}: {value[1]}"


STR = Type("text", parse_str)
INT = Type("integer", parse_int)
FLOAT = Type("number", parse_float, show_float)
BOOL = Type("boolean", parse_bool, show_bool)
RATE = Type("rate (60/m, 1000/h, 10/s)", parse_rate)
LIST = Type("comma-separated list", parse_list, show_list)
ADDRESSES = Type("comma-separated IP addresses or networks", parse_addresses, show_list)
TRAFFIC_SPLIT_TYPE = Type(
    "traffic split (service: pool weight, ...; ...)", parse_traffic_split, show_traffic_split
)
HEADER = Type("header: value", parse_header, show_header)
PATH = Type("path", parse_path)
PRESETS_TYPE = Type('JSON object ({"name": {"steps": [...], ...}})', parse_presets, show_presets)
URI_PREFIX = Type("path (/name/)", parse_uri_prefix)


# --- The declaration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Computed:
    """A default that depends on settings declared before it (or on the machine)."""

    text: str  # how docs/settings.md states it
    compute: Callable[["Values"], Any]


@dataclass(frozen=True)
class Setting:
    name: str  # the Django setting, and the environment variable unless `spellings` says otherwise
    type: Type
    default: Any  # a value of `type`, or Computed
    description: str  # one line
    group: str
    minimum: float | None = None
    maximum: float | None = None
    # Environment variables read, the first one set wins; by default the setting's own name.
    spellings: tuple[str, ...] = ()
    flag: str | None = None  # a command-line flag of the scaler's commands that overrides it
    django: bool = True  # False: read where it is used (named in the description), not a Django setting

    @property
    def variables(self) -> tuple[str, ...]:
        return self.spellings or (self.name,)

    def parse(self, variable: str, raw: str) -> Any:
        """The value of `raw`, or ImproperlyConfigured naming `variable` (or a flag) and what is wrong."""
        value = self.type.parse(variable, raw)
        if self.minimum is not None and value < self.minimum:
            raise ImproperlyConfigured(f"{variable}={value} must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ImproperlyConfigured(f"{variable}={value} must be at most {self.maximum:g}")
        return value

    def read(self, environ: Mapping[str, str], earlier: "Values") -> Any:
        """Every spelling that is set must parse; the first one set gives the value."""
        found = [
            self.parse(variable, environ[variable]) for variable in self.variables if variable in environ
        ]
        if found:
            return found[0]
        return self.default_value(earlier)

    def default_value(self, earlier: "Values") -> Any:
        return self.default.compute(earlier) if isinstance(self.default, Computed) else self.default

    def default_text(self) -> str:
        if isinstance(self.default, Computed):
            return self.default.text
        return self.type.show(self.default)


class Values(dict):
    """Settings by name, also readable as attributes (values.MAX_UPLOAD_BYTES)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# The hosts of the embedded default: a server only this machine (and Django's test client) reaches.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1", "testserver"})


def deployment_signals(values: Mapping[str, Any]) -> list[str]:
    """What says these settings serve others: a service, object storage, or a host name beyond this
    machine. Not DEBUG: it is off in the embedded default too, where `make run` needs no keys."""
    signals = [
        name
        for name in ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME")
        if values[name]
    ]
    if set(values["ALLOWED_HOSTS"]) - LOCAL_HOSTS:
        signals.append("ALLOWED_HOSTS")
    return signals


# Words that mark a secret someone was told to replace (deploy/k8s/secret.yaml's "replace-me"), or of the
# built-in SECRET_KEY's kind ("insecure", "change-me"): compared without case, spaces or punctuation.
PLACEHOLDER_MARKS = ("replaceme", "changeme", "insecure", "placeholder", "example", "notsecret", "yoursecret")


def is_placeholder(secret: str) -> bool:
    """True for a secret that is set, but to a value published in files or documentation."""
    letters = re.sub(r"[^a-z0-9]", "", secret.lower())
    return bool(secret) and any(mark in letters for mark in PLACEHOLDER_MARKS)


MB = 1024 * 1024

SERVICES = "Services"
STORAGE = "Object storage"
SECURITY = "Security"
LIMITS = "Limits"
JOBS = "Jobs and workers"
SCALER_WORKERS = "Scaler: workers"
SCALER_GATEWAYS = "Scaler: gateways behind nginx"
SCALER_PROCESS = "Scaler: the process"
PROCESSES = "Processes and logs"
CALLBACKS = "Callbacks"

SETTINGS: tuple[Setting, ...] = (
    # --- Processes and logs
    Setting(
        "VAR_DIR",
        PATH,
        Computed("var/ in the project folder", lambda v: BASE_DIR / "var"),
        "Where the embedded default keeps its database, files and temporary uploads.",
        PROCESSES,
        spellings=("DARKROOM_VAR_DIR",),
    ),
    Setting("DEBUG", BOOL, False, "Django's debug mode: never in production.", PROCESSES),
    Setting("LOG_LEVEL", STR, "INFO", "The root logger's level; every process logs JSON lines.", PROCESSES),
    Setting(
        "GATEWAY_PROCESS_HEADER",
        BOOL,
        False,
        "A WebSocket handshake's answer names the gateway process that holds the socket "
        "(`X-Gateway-Process`: its process id), for benchmarks and tests of several processes on one port.",
        PROCESSES,
    ),
    Setting(
        "WORKER_PROCESSES",
        INT,
        1,
        "Worker processes `manage.py run_workers` (`make worker`) keeps alive.",
        PROCESSES,
        minimum=1,
        flag="--processes",
    ),
    Setting(
        "WEB_CONCURRENCY",
        INT,
        Computed("the machine's cores", lambda v: os.cpu_count() or 1),
        "Server processes: read by uvicorn itself and by project/gunicorn_conf.py (`make serve` uses 1 "
        "unless it is set).",
        PROCESSES,
        minimum=1,
        django=False,
    ),
    Setting(
        "GUNICORN_BIND",
        STR,
        "127.0.0.1:8000",
        "Where gunicorn listens (project/gunicorn_conf.py).",
        PROCESSES,
        django=False,
    ),
    Setting(
        "GUNICORN_THREADS",
        INT,
        4,
        "Threads per gunicorn process (project/gunicorn_conf.py).",
        PROCESSES,
        minimum=1,
        django=False,
    ),
    Setting(
        "PROMETHEUS_MULTIPROC_DIR",
        STR,
        "",
        "Read by prometheus_client: a folder shared by every process on the machine, so /metrics sums "
        "them; unset, each process reports only itself.",
        PROCESSES,
        django=False,
    ),
    # --- Services
    Setting(
        "DATABASE_URL",
        url("postgres", "postgresql", "sqlite"),
        "",
        "PostgreSQL (postgres://user@host:5432/darkroom) instead of SQLite under VAR_DIR.",
        SERVICES,
    ),
    # A pool per process: under ASGI each request runs in a new thread, so persistent connections would
    # never be reused. With at least as many connections as request threads no request queues for one,
    # so a wait means the database is down: DATABASE_POOL_TIMEOUT is short, and the 503 comes fast.
    Setting(
        "DATABASE_POOL_SIZE",
        INT,
        20,
        "PostgreSQL connections per process, at most: at least the server's request threads.",
        SERVICES,
        minimum=1,
    ),
    Setting(
        "DATABASE_POOL_TIMEOUT",
        FLOAT,
        1.0,
        "Seconds a request waits for a database connection before answering 503.",
        SERVICES,
    ),
    # Statements bound on the server, so that psycopg can prepare the ones a pooled connection runs
    # again and again: PostgreSQL then parses and plans each of them once per connection, not per run.
    Setting(
        "DATABASE_PREPARED_STATEMENTS",
        BOOL,
        True,
        "PostgreSQL statements bound on the server and prepared once a connection has run them a few "
        "times. Off behind a pooler that can't keep them (PgBouncer in transaction mode before 1.21).",
        SERVICES,
    ),
    Setting(
        "BROKER_URL",
        url("amqp", "amqps"),
        "",
        "RabbitMQ (amqp://guest:guest@host:5672/%2F) instead of in-process workers.",
        SERVICES,
    ),
    Setting(
        "BROKER_CONNECT_TIMEOUT",
        INT,
        2,
        "Seconds to connect to RabbitMQ, or to wait on a blocked connection: a request never hangs on it.",
        SERVICES,
        minimum=1,
    ),
    Setting(
        "BROKER_PUBLISH_TIMEOUT",
        FLOAT,
        1.5,
        "Seconds a submission waits for the broker's confirmation before answering 503.",
        SERVICES,
    ),
    Setting(
        "RABBITMQ_MANAGEMENT_URL",
        url("http", "https"),
        "",
        "RabbitMQ's management API, for the jobs in flight per queue (optional).",
        SERVICES,
    ),
    Setting(
        "REDIS_URL",
        url("redis", "rediss", "unix"),
        "",
        "Redis for the channel layer and the cache, instead of in-process memory.",
        SERVICES,
    ),
    # --- Object storage (read by the STORAGES block of project/settings.py)
    Setting(
        "AWS_STORAGE_BUCKET_NAME",
        STR,
        "",
        "An S3 bucket for uploads and results instead of VAR_DIR/media.",
        STORAGE,
    ),
    Setting(
        "AWS_S3_ENDPOINT_URL",
        STR,
        "",
        "An S3-compatible server (e.g. http://minio:9000); unset: AWS S3.",
        STORAGE,
        django=False,
    ),
    Setting(
        "AWS_ACCESS_KEY_ID",
        STR,
        "",
        "The bucket's access key; unset: boto3's own lookup.",
        STORAGE,
        django=False,
    ),
    Setting(
        "AWS_SECRET_ACCESS_KEY",
        STR,
        "",
        "The bucket's secret key; unset: boto3's own lookup.",
        STORAGE,
        django=False,
    ),
    Setting("AWS_S3_REGION_NAME", STR, "", "The bucket's region.", STORAGE, django=False),
    Setting(
        "AWS_QUERYSTRING_EXPIRE",
        INT,
        600,
        "Seconds a signed download URL stays valid.",
        STORAGE,
        minimum=1,
        django=False,
    ),
    Setting(
        "AWS_S3_CONNECT_TIMEOUT",
        INT,
        2,
        "Seconds to connect to the S3 server: a dead one makes a quick 503, not a hung request.",
        STORAGE,
        minimum=1,
        django=False,
    ),
    Setting(
        "AWS_S3_READ_TIMEOUT",
        INT,
        5,
        "Seconds to wait for the S3 server's answer: a hung one makes a 503 this soon.",
        STORAGE,
        minimum=1,
        django=False,
    ),
    Setting(
        "AWS_S3_MAX_ATTEMPTS",
        INT,
        2,
        "Tries of each S3 request, the first included, before the storage counts as unavailable.",
        STORAGE,
        minimum=1,
        django=False,
    ),
    # The local-disk counterpart of a signed URL: the front server sends the file, not the gateway.
    Setting(
        "DOWNLOAD_ACCEL_PREFIX",
        URI_PREFIX,
        "",
        "Behind nginx with results on local disk: a download answers `X-Accel-Redirect: <prefix><key>` and "
        "nginx's internal location of that prefix sends the file (deploy/nginx/darkroom.conf); empty: the "
        "gateway sends it. The scaler sets it for the gateways it runs behind its nginx.",
        STORAGE,
    ),
    # --- Security
    Setting(
        "SECRET_KEY",
        STR,
        "embedded-default-insecure-key-change-me-for-any-real-deployment",
        "Django's signing key: the default, or a placeholder, is refused in a DEPLOYMENT (darkroom.E005).",
        SECURITY,
    ),
    Setting(
        "ALLOWED_HOSTS",
        LIST,
        ["127.0.0.1", "localhost", "[::1]", "testserver"],
        "Host names this server answers to.",
        SECURITY,
    ),
    Setting(
        "CSRF_TRUSTED_ORIGINS",
        LIST,
        [],
        "Origins (https://host) trusted for form posts across hosts.",
        SECURITY,
    ),
    Setting(
        "DEPLOYMENT",
        BOOL,
        Computed(
            "true when DATABASE_URL, BROKER_URL, REDIS_URL, AWS_STORAGE_BUCKET_NAME or a host beyond this "
            "machine in ALLOWED_HOSTS is set",
            lambda v: bool(deployment_signals(v)),
        ),
        "This server serves others: API keys are required by default, and the embedded SECRET_KEY or a "
        "placeholder one is refused (darkroom.E005).",
        SECURITY,
    ),
    Setting(
        "API_KEYS_REQUIRED",
        BOOL,
        Computed("DEPLOYMENT", lambda v: v.DEPLOYMENT),
        "The API and the WebSockets answer only an API key, a token or a signed-in user's session, and the "
        "pages ask visitors to sign in (/accounts/login/); false: anyone may submit, as one shared owner.",
        SECURITY,
    ),
    Setting(
        "TRUSTED_PROXIES",
        ADDRESSES,
        [],
        "Proxies whose X-Forwarded-For names the client (addresses or networks); tell the servers too "
        "(--forwarded-allow-ips). Empty behind a proxy: every client counts as the proxy (docs/security.md).",
        SECURITY,
    ),
    Setting(
        "METRICS_TOKEN",
        STR,
        "",
        "Bearer token for /metrics, the health checks' details and the scaler's endpoints; a placeholder "
        "is refused (darkroom.E006).",
        SECURITY,
    ),
    Setting("CORS_ALLOWED_ORIGINS", LIST, [], "Origins whose pages may call the API.", SECURITY),
    Setting(
        "JWT_JWKS_URL",
        STR,
        "",
        "An identity provider's JWKS (https://.../.well-known/jwks.json): bearer tokens signed by its keys "
        "are accepted beside API keys and sessions, over HTTP and WebSocket.",
        SECURITY,
    ),
    Setting(
        "JWT_PUBLIC_KEY_FILE",
        STR,
        "",
        "Instead of a JWKS URL, the PEM file of the one public key tokens are signed with.",
        SECURITY,
    ),
    Setting("JWT_ISSUER", STR, "", "The `iss` every token must carry (required with JWT).", SECURITY),
    Setting("JWT_AUDIENCE", STR, "", "The `aud` every token must name (required with JWT).", SECURITY),
    Setting(
        "JWT_ALGORITHMS",
        LIST,
        ["RS256", "ES256"],
        "Signature algorithms accepted (never `none` or HS*).",
        SECURITY,
    ),
    Setting(
        "JWT_OWNER_CLAIM", STR, "sub", "The claim that names a token's owner: its jobs are theirs.", SECURITY
    ),
    Setting(
        "JWT_STAFF_CLAIM",
        STR,
        "",
        "A claim that makes a token staff when it is true, equals JWT_STAFF_VALUE or is a list holding it; "
        "empty: no token is staff.",
        SECURITY,
    ),
    Setting("JWT_STAFF_VALUE", STR, "staff", "See JWT_STAFF_CLAIM.", SECURITY),
    Setting(
        "JWT_JWKS_CACHE_SECONDS",
        INT,
        300,
        "How long fetched signing keys are kept; a token naming an unknown key fetches them again.",
        SECURITY,
        minimum=0,
    ),
    Setting(
        "SESSION_COOKIE_SECURE", BOOL, False, "Session cookie over HTTPS only (behind a TLS proxy).", SECURITY
    ),
    Setting("CSRF_COOKIE_SECURE", BOOL, False, "CSRF cookie over HTTPS only (behind a TLS proxy).", SECURITY),
    Setting(
        "SECURE_HSTS_SECONDS", INT, 0, "Strict-Transport-Security max-age; 0: no header.", SECURITY, minimum=0
    ),
    Setting(
        "SECURE_SSL_REDIRECT",
        BOOL,
        False,
        "Redirect plain HTTP to HTTPS (health and metrics exempt).",
        SECURITY,
    ),
    Setting(
        "SECURE_PROXY_SSL_HEADER",
        HEADER,
        None,
        "The header a TLS proxy sets on every request to mark HTTPS, e.g. 'X-Forwarded-Proto: https'.",
        SECURITY,
    ),
    # --- Limits
    Setting(
        "MAX_UPLOAD_BYTES", INT, 25 * MB, "The largest image file one upload may carry.", LIMITS, minimum=1
    ),
    Setting(
        "MAX_BATCH_FILES",
        INT,
        20,
        "Files one batch (POST /api/v1/jobs/batch, the upload form) may carry.",
        LIMITS,
        minimum=1,
    ),
    Setting(
        "MAX_REQUEST_BYTES",
        INT,
        Computed("MAX_UPLOAD_BYTES + 1 MB", lambda v: v.MAX_UPLOAD_BYTES + MB),
        "A one-file request's whole body: the upload plus its multipart framing and form fields. A batch "
        "may carry MAX_BATCH_FILES uploads with the same framing allowance.",
        LIMITS,
        minimum=1,
    ),
    Setting(
        "SAVE_DATA_MAX_BYTES",
        INT,
        150_000,
        "The byte budget (max_bytes) the mobile and lite pages fill in for a visitor who asked to save "
        "data (Save-Data, a slow connection or ?bandwidth=low); 0 leaves it empty.",
        LIMITS,
        minimum=0,
    ),
    Setting(
        "MAX_IMAGE_PIXELS",
        INT,
        50_000_000,
        "The largest image (width x height) a worker decodes. Pillow's own limit is set from it, so a "
        "frame or tile larger than the header said is refused alike: 422 image_too_large.",
        LIMITS,
        minimum=1,
    ),
    Setting(
        "MAX_OUTPUT_PIXELS",
        INT,
        Computed("MAX_IMAGE_PIXELS", lambda v: v.MAX_IMAGE_PIXELS),
        "The largest result an operation may make: a small upload cannot ask for a huge output.",
        LIMITS,
        minimum=1,
    ),
    # What an enlarged result costs (its operation, its encodes) grows with its pixels, not the upload's.
    Setting(
        "MAX_ENLARGEMENT",
        INT,
        16,
        "How many times the input's pixels a result may have: 16 is four times as wide and as high. A "
        "tiny upload cannot buy the work of a huge result.",
        LIMITS,
        minimum=1,
        maximum=10_000,
    ),
    # Each step is an operation's work on up to MAX_OUTPUT_PIXELS: this bounds what one job may ask for.
    Setting(
        "MAX_STEPS",
        INT,
        10,
        "Steps one recipe (a job's `steps`, a preset) may have.",
        LIMITS,
        minimum=1,
        maximum=100,
    ),
    # Measured at AVIF_SPEED 6 on one core: about 0.2 s a megapixel for smooth images, 1.3 s for noise.
    Setting(
        "MAX_AVIF_OUTPUT_PIXELS",
        INT,
        4_000_000,
        "The largest result (width x height) encoded as AVIF, whose encoder is far slower than the "
        "others': at 4 megapixels about a second for a smooth image, five for noise (AVIF_SPEED 6, one "
        "core). Larger results need another format.",
        LIMITS,
        minimum=1,
    ),
    # An animation's frames are decoded one at a time, but the result's are all held until encoded.
    Setting(
        "MAX_ANIMATION_PIXELS",
        INT,
        Computed("MAX_IMAGE_PIXELS", lambda v: v.MAX_IMAGE_PIXELS),
        "The most pixels an animated GIF or WebP may keep through a job, frames × width × height (of the "
        "input or the result, whichever is larger): a larger one is refused (422 animation_too_large) "
        "unless its job keeps the first frame alone (docs/animations.md).",
        LIMITS,
        minimum=1,
    ),
    # Each frame costs a pass through the operation and the encoder, however small it is. At most the
    # frames an upload's header walk counts (processing.imaging.frame_count.MAX_COUNTED_FRAMES).
    Setting(
        "MAX_ANIMATION_FRAMES",
        INT,
        1000,
        "The most frames an animation may keep through a job; more is refused as MAX_ANIMATION_PIXELS is.",
        LIMITS,
        minimum=1,
        maximum=10_000,
    ),
    # Ordinary encoders write about 10 scans; libjpeg-turbo's own tools suggest refusing beyond a few hundred.
    Setting(
        "MAX_JPEG_SCANS",
        INT,
        100,
        "Scans a progressive JPEG may have: each is one more pass over the whole image when decoded.",
        LIMITS,
        minimum=1,
    ),
    # Assets are logos and marks: small, kept for good, decoded whole at upload and held by every worker.
    Setting(
        "MAX_ASSET_BYTES",
        INT,
        5 * MB,
        "The largest file one asset upload (POST /api/v1/assets: an image to overlay) may carry.",
        LIMITS,
        minimum=1,
    ),
    Setting(
        "MAX_ASSET_PIXELS",
        INT,
        4_000_000,
        "The largest asset (width x height): it is decoded whole when uploaded, and kept decoded by the "
        "workers that use it.",
        LIMITS,
        minimum=1,
    ),
    Setting("MAX_ASSETS_PER_OWNER", INT, 100, "Assets one owner may keep at once.", LIMITS, minimum=1),
    Setting(
        "RATE_LIMIT_SUBMIT", RATE, "120/m", "Job-creating requests per API key or client address.", LIMITS
    ),
    Setting(
        "RATE_LIMIT_READ", RATE, "1200/m", "Every other API request per API key or client address.", LIMITS
    ),
    # --- Jobs and workers
    Setting("JOB_TIME_LIMIT_SECONDS", INT, 120, "Seconds one attempt at a job may run.", JOBS, minimum=1),
    Setting(
        "AVIF_SPEED",
        INT,
        6,
        "The AVIF encoder's speed, 0 (smallest files, slowest) to 10. On photographs 4 spends about a tenth "
        "fewer bytes than 6 for about five times the encoding time; 8 a tenth more for half of it.",
        JOBS,
        minimum=0,
        maximum=10,
    ),
    # Measured on HD photos at quality 85, one core: `python -m bench.formats --jxl-effort N`.
    Setting(
        "JXL_EFFORT",
        INT,
        3,
        "The JPEG XL encoder's effort, 1 (fastest) to 9. At 3 a megapixel takes about 0.07 s and a photo at "
        "quality 85 is about half its JPEG's bytes; 7 takes ten times as long, for up to 40% fewer bytes at "
        "the highest qualities on smooth photos. Lossless pixels are always encoded at 1 (the fastest).",
        JOBS,
        minimum=1,
        maximum=9,
    ),
    Setting(
        "TRAFFIC_SPLIT",
        TRAFFIC_SPLIT_TYPE,
        {},
        "Services whose jobs are split by weight between worker pools (queues), e.g. "
        f"`sobel: {pools.DEFAULT_POOL} 90, sobel-canary 10`; every other job goes to `{pools.DEFAULT_POOL}`.",
        JOBS,
    ),
    Setting(
        "WORKER_POOL",
        STR,
        pools.DEFAULT_POOL,
        "The pool (queue) `make worker`, run_workers and scale_workers run workers for.",
        JOBS,
        flag="--pool",
    ),
    Setting(
        "WORKER_PIXEL_BUDGET",
        INT,
        0,
        "Decoded pixels the jobs of all worker processes on a machine may hold at once (a lighter "
        "operation's pixels count for less: grayscale a fifth); a job waits until its pixels fit, and one "
        "larger than the budget runs alone. 0: 60% of the memory limit (the cgroup's, else the "
        "machine's) at 12 bytes a pixel.",
        JOBS,
        minimum=0,
    ),
    Setting(
        "WORKER_ADMISSION_LEDGER",
        STR,
        "",
        "The file where a machine's worker processes keep the pixels each holds; empty: admission.json in "
        "VAR_DIR. Processes sharing a memory limit must share it.",
        JOBS,
    ),
    Setting(
        "JOB_MAX_RETRIES",
        INT,
        3,
        "Retries of a job that failed with an error worth retrying.",
        JOBS,
        minimum=0,
    ),
    # Whatever ended each start: an error, or its worker killed (e.g. out of memory). The default leaves
    # room for every retry, so only lost workers make a job run out of attempts.
    Setting(
        "JOB_MAX_ATTEMPTS",
        INT,
        Computed("JOB_MAX_RETRIES + 1", lambda v: v.JOB_MAX_RETRIES + 1),
        "Starts of one job, whatever ended each: past this it fails as worker_lost, not redelivered forever.",
        JOBS,
        minimum=1,
    ),
    Setting(
        "JOB_LEASE_SECONDS",
        INT,
        20,
        "A claimed job's lease, renewed while it runs: a dead worker's job is claimable once it runs out.",
        JOBS,
        minimum=3,
    ),
    Setting(
        "REQUEUE_UNPUBLISHED_AFTER_SECONDS",
        INT,
        30,
        "A queued job whose message may never have reached the broker is re-published after this: one "
        "never confirmed, or one its pool's queue has no message for (its process died before the publish).",
        JOBS,
        minimum=1,
    ),
    Setting(
        "REQUEUE_STALE_AFTER_SECONDS",
        INT,
        900,
        "A queued job nobody claimed for this long is re-published even when its queue can't be read.",
        JOBS,
        minimum=10,
    ),
    Setting(
        "EMBEDDED_WORKERS",
        BOOL,
        Computed("true unless BROKER_URL is set", lambda v: not v.BROKER_URL),
        "Worker threads inside the server process.",
        JOBS,
    ),
    Setting("EMBEDDED_WORKER_THREADS", INT, 2, "Worker threads of the embedded workers.", JOBS, minimum=1),
    Setting(
        "RESULT_REUSE",
        BOOL,
        True,
        "A new job whose input, service and parameters match a completed one copies its result.",
        JOBS,
    ),
    Setting(
        "PRESETS",
        PRESETS_TYPE,
        Computed("avatar, web and small (docs/recipes.md)", lambda v: DEFAULT_PRESETS),
        "Named recipes clients use as preset=<name> (GET /api/v1/presets lists them): a JSON object of "
        'name to {"description", "steps", and the output options format, quality, max_bytes}. A preset '
        "of the same name made in the admin replaces the one declared here.",
        JOBS,
    ),
    Setting(
        "FILE_TTL_SECONDS",
        INT,
        24 * 3600,
        "Finished jobs' files are removed by the cleanup (POST /api/v1/files/cleanup) after this.",
        JOBS,
        minimum=0,
    ),
    # --- Callbacks (processing/callbacks/, docs/callbacks.md)
    Setting(
        "CALLBACK_ALLOWED_NETWORKS",
        ADDRESSES,
        [],
        "Addresses callbacks may reach although they are loopback, private, link-local or metadata "
        "addresses, all refused otherwise, e.g. 10.20.0.0/16 for receivers on the operator's own network.",
        CALLBACKS,
    ),
    Setting(
        "CALLBACK_TIMEOUT_SECONDS",
        FLOAT,
        5.0,
        "How long a callback waits to connect, and for each read of the answer; the whole answer within "
        "three times this.",
        CALLBACKS,
        minimum=0.1,
        maximum=60,
    ),
    Setting(
        "CALLBACK_FIRST_RETRY_SECONDS",
        FLOAT,
        10.0,
        "The wait before a failed callback's first retry; it doubles at each retry, up to an hour.",
        CALLBACKS,
        minimum=0,
    ),
    Setting(
        "CALLBACK_RETRY_SECONDS",
        INT,
        24 * 3600,
        "How long a callback that finds its receiver failing is retried, from the job's end, before it is "
        "given up.",
        CALLBACKS,
        minimum=0,
    ),
    # --- Scaler: workers
    Setting(
        "SCALE_CHECK_INTERVAL",
        FLOAT,
        30.0,
        "Seconds between two checks of the load.",
        SCALER_WORKERS,
        flag="--interval",
    ),
    # The SERVICES_* spellings win over the short ones when both are set (older deployments use either).
    Setting(
        "MIN_INSTANCES",
        INT,
        1,
        "Worker processes the scaler keeps at least.",
        SCALER_WORKERS,
        minimum=0,
        spellings=("SERVICES_MIN_INSTANCES", "MIN_INSTANCES"),
        flag="--min-instances",
    ),
    Setting(
        "MAX_INSTANCES",
        INT,
        5,
        "Worker processes the scaler keeps at most.",
        SCALER_WORKERS,
        minimum=1,
        spellings=("SERVICES_MAX_INSTANCES", "MAX_INSTANCES"),
        flag="--max-instances",
    ),
    Setting(
        "SCALE_UP_THRESHOLD",
        FLOAT,
        10.0,
        "Work per worker (messages waiting + jobs being processed) above which workers are added.",
        SCALER_WORKERS,
        flag="--scale-up-threshold",
    ),
    Setting(
        "SCALE_DOWN_THRESHOLD",
        FLOAT,
        2.0,
        "Work per worker below which one worker is stopped (it drains).",
        SCALER_WORKERS,
        flag="--scale-down-threshold",
    ),
    Setting(
        "SERVICES_COOLDOWN_PERIOD",
        FLOAT,
        120.0,
        "Seconds between two scaling actions on the workers.",
        SCALER_WORKERS,
        minimum=0,
        spellings=("SERVICES_COOLDOWN_PERIOD", "COOLDOWN_PERIOD"),
        flag="--cooldown",
    ),
    Setting(
        "WORKER_THREADS",
        INT,
        2,
        "Threads per worker process the scaler or run_workers starts.",
        SCALER_WORKERS,
        minimum=1,
        flag="--threads",
    ),
    # --- Scaler: gateways behind nginx
    Setting(
        "GATEWAY_MIN_INSTANCES",
        INT,
        1,
        "Gateway processes kept at least (scale_workers --gateways).",
        SCALER_GATEWAYS,
        minimum=1,
        flag="--gateway-min",
    ),
    Setting(
        "GATEWAY_MAX_INSTANCES",
        INT,
        3,
        "Gateway processes kept at most.",
        SCALER_GATEWAYS,
        minimum=1,
        flag="--gateway-max",
    ),
    Setting(
        "GATEWAY_LOAD_THRESHOLD_UP",
        FLOAT,
        80.0,
        "Load score (average queue depth x 10 + health-check ms / 100) above which a gateway is added.",
        SCALER_GATEWAYS,
        flag="--gateway-up",
    ),
    Setting(
        "GATEWAY_LOAD_THRESHOLD_DOWN",
        FLOAT,
        30.0,
        "Load score below which a gateway is removed.",
        SCALER_GATEWAYS,
        flag="--gateway-down",
    ),
    Setting(
        "GATEWAY_COOLDOWN_PERIOD",
        FLOAT,
        180.0,
        "Seconds between two scaling actions on the gateways.",
        SCALER_GATEWAYS,
        minimum=0,
        flag="--gateway-cooldown",
    ),
    Setting(
        "GATEWAY_SUSTAIN_PERIOD",
        FLOAT,
        30.0,
        "Seconds the load score must stay past a threshold before the scaler acts on it.",
        SCALER_GATEWAYS,
        minimum=0,
        flag="--gateway-sustain",
    ),
    Setting(
        "GATEWAY_PORT_START",
        INT,
        8001,
        "The first gateway's port, the next ones after it; 0: any free port.",
        SCALER_GATEWAYS,
        minimum=0,
        flag="--gateway-port-start",
    ),
    Setting(
        "NGINX_LISTEN",
        STR,
        "127.0.0.1:8000",
        "Where the scaler's nginx listens (HOST:PORT).",
        SCALER_GATEWAYS,
        flag="--nginx-listen",
    ),
    Setting(
        "NGINX_BINARY",
        STR,
        "nginx",
        "The nginx program the scaler runs.",
        SCALER_GATEWAYS,
        flag="--nginx-binary",
    ),
    # --- Scaler: the process
    Setting(
        "SCALER_BACKEND",
        choice("local", "kubernetes"),
        "local",
        "local: worker processes on this machine; kubernetes: the worker Deployment's replicas.",
        SCALER_PROCESS,
        flag="--backend",
    ),
    Setting(
        "SCALER_HOST",
        STR,
        "127.0.0.1",
        "Where the scaler's health and metrics endpoints listen.",
        SCALER_PROCESS,
        flag="--host",
    ),
    Setting(
        "SCALER_HEALTH_PORT",
        INT,
        8082,
        "The scaler's health endpoint; 0: none.",
        SCALER_PROCESS,
        minimum=0,
        flag="--health-port",
    ),
    Setting(
        "SCALER_METRICS_PORT",
        INT,
        9090,
        "The scaler's Prometheus endpoint; 0: none.",
        SCALER_PROCESS,
        minimum=0,
        flag="--metrics-port",
    ),
    Setting(
        "KUBERNETES_NAMESPACE",
        STR,
        "",
        "The worker Deployment's namespace; empty: the scaler pod's own.",
        SCALER_PROCESS,
        flag="--namespace",
    ),
    Setting(
        "KUBERNETES_WORKER_DEPLOYMENT",
        STR,
        "darkroom-worker",
        "The worker Deployment the scaler sizes.",
        SCALER_PROCESS,
        flag="--worker-deployment",
    ),
    Setting(
        "KUBERNETES_SERVICE_HOST",
        STR,
        "",
        "Set by Kubernetes in every pod: where the kubernetes backend finds the API server.",
        SCALER_PROCESS,
        django=False,
    ),
    Setting(
        "KUBERNETES_SERVICE_PORT",
        INT,
        443,
        "Set by Kubernetes in every pod: the API server's port.",
        SCALER_PROCESS,
        django=False,
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def load(environ: Mapping[str, str]) -> Values:
    """Every declared setting, parsed from `environ`, in declaration order (so a computed default can
    use the settings above it). A bad value raises ImproperlyConfigured naming its variable."""
    values = Values()
    for setting in SETTINGS:
        values[setting.name] = setting.read(environ, values)
    return values


def django_settings(values: Values) -> dict[str, Any]:
    """The settings that are Django settings of the same name."""
    return {name: value for name, value in values.items() if BY_NAME[name].django}


def read(name: str, environ: Mapping[str, str] = os.environ) -> Any:
    """One setting read where it is used, outside Django's settings (gunicorn, the Kubernetes API)."""
    return load(environ)[name]


def defaults() -> Values:
    """Every setting as it is with no environment set."""
    return load({})


# --- Relations between settings: Django system checks with stable ids (project/checks.py,
# scaler/checks.py), and the scaler's own check of its flags ---------------------------------------
@dataclass(frozen=True)
class Rule:
    id: str
    names: tuple[str, ...]  # the settings it relates, in the order `message` names them
    holds: Callable[..., bool]  # called with those settings' values
    message: str  # a format string: {0}, {1}... are the settings, named as the caller chooses
    hint: str
    warning: bool = False  # said at every start, but it does not stop one

    def broken(self, values: Mapping[str, Any]) -> bool:
        return not self.holds(*(values[name] for name in self.names))

    def describe(self, label: Callable[[str], str]) -> str:
        return self.message.format(*(label(name) for name in self.names))


RULES: tuple[Rule, ...] = (
    Rule(
        "darkroom.E005",
        ("SECRET_KEY", "DEPLOYMENT"),
        lambda key, deployed: not (deployed and is_placeholder(key)),
        "{0} is the embedded default or a placeholder, and {1}: anyone could forge sessions and signed "
        "values.",
        'Set SECRET_KEY, e.g. to python -c "import secrets; print(secrets.token_urlsafe(50))".',
    ),
    Rule(
        "darkroom.E006",
        ("METRICS_TOKEN",),
        lambda token: not is_placeholder(token),
        "{0} is a placeholder: anyone who has read the deployment files could read /metrics and the "
        "health checks' details.",
        'Set METRICS_TOKEN to a random value (python -c "import secrets; print(secrets.token_urlsafe(32))"), '
        "or leave it empty: staff only.",
    ),
    Rule(
        "darkroom.W003",
        ("API_KEYS_REQUIRED", "DEPLOYMENT"),
        lambda required, deployed: required or not deployed,
        "{0} with {1}: anyone who reaches the server may submit jobs, and every caller without a key "
        "shares one owner, who may list, download and cancel all of their jobs.",
        "Leave API_KEYS_REQUIRED unset, and give each client an API key (manage.py create_api_key).",
        warning=True,
    ),
    Rule(
        "darkroom.E001",
        ("MAX_REQUEST_BYTES", "MAX_UPLOAD_BYTES"),
        lambda request, upload: request >= upload,
        "{0} is smaller than {1}: uploads near it would be refused.",
        "Leave MAX_REQUEST_BYTES unset, or make it MAX_UPLOAD_BYTES plus 1 MB.",
    ),
    Rule(
        "darkroom.E002",
        ("JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE", "JWT_ISSUER", "JWT_AUDIENCE"),
        lambda jwks, key_file, issuer, audience: not (jwks or key_file) or bool(issuer and audience),
        "{0} or {1} is set, but {2} or {3} is not: any token signed by those keys would be accepted.",
        "Set JWT_ISSUER and JWT_AUDIENCE to what your identity provider puts in its tokens.",
    ),
    Rule(
        "darkroom.E003",
        ("JWT_ALGORITHMS",),
        lambda algorithms: all(
            name in ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256") for name in algorithms
        ),
        "{0} may only name public-key algorithms (RS256, RS384, RS512, ES256, ES384, PS256).",
        "Use RS256 or ES256.",
    ),
    Rule(
        "darkroom.E101",
        ("MIN_INSTANCES", "MAX_INSTANCES"),
        lambda low, high: low <= high,
        "{0} is above {1}.",
        "Make MIN_INSTANCES <= MAX_INSTANCES.",
    ),
    Rule(
        "darkroom.E102",
        ("SCALE_DOWN_THRESHOLD", "SCALE_UP_THRESHOLD"),
        lambda down, up: down < up,
        "{0} is not below {1}: the workers would flap.",
        "Leave a gap, e.g. 2 and 10.",
    ),
    Rule(
        "darkroom.E103",
        ("GATEWAY_MIN_INSTANCES", "GATEWAY_MAX_INSTANCES"),
        lambda low, high: low <= high,
        "{0} is above {1}.",
        "Make GATEWAY_MIN_INSTANCES <= GATEWAY_MAX_INSTANCES.",
    ),
    Rule(
        "darkroom.E104",
        ("GATEWAY_LOAD_THRESHOLD_DOWN", "GATEWAY_LOAD_THRESHOLD_UP"),
        lambda down, up: down < up,
        "{0} is not below {1}: the gateways would flap.",
        "Leave a gap, e.g. 30 and 80.",
    ),
    Rule(
        "darkroom.E105",
        ("SCALE_CHECK_INTERVAL",),
        lambda interval: interval > 0,
        "{0} must be positive.",
        "Use seconds, e.g. 30.",
    ),
    Rule(
        "darkroom.W101",
        ("SCALER_HOST", "METRICS_TOKEN"),
        lambda host, token: bool(token) or host in LOCAL_HOSTS,
        "{0} listens beyond this machine and {1} is empty: anyone who reaches the scaler's ports reads its "
        "metrics and the details of its health.",
        "Set METRICS_TOKEN (the scaler's endpoints then want it), or SCALER_HOST=127.0.0.1.",
        warning=True,
    ),
)


def broken_rules(values: Mapping[str, Any], groups: Iterable[str], warnings: bool = True) -> list[Rule]:
    """The rules about settings of `groups` that `values` break (the errors alone without `warnings`)."""
    wanted = set(groups)
    return [
        rule
        for rule in RULES
        if BY_NAME[rule.names[0]].group in wanted and (warnings or not rule.warning) and rule.broken(values)
    ]
