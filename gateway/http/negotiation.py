"""Which image formats a client's Accept header names: format=auto chooses by it."""

from processing.jobs.submissions import MODERN_FORMATS


def named_image_formats(request) -> tuple[str, ...]:
    """The modern formats (AVIF, WebP) the Accept header names with a quality above 0, best first.

    Only a format named outright counts: `*/*` or `image/*` is what a client sends when it has no
    idea, not a promise that it can show AVIF.
    """
    named = {media.sub_type for media in request.accepted_types if media.main_type == "image"}
    return tuple(name for name in MODERN_FORMATS if name in named)


def download_key(request, job) -> tuple[str, str]:
    """(key, format) of the file to send for this request: a format=auto result in a modern format
    goes only to a client whose Accept header names it; others get its JPEG or PNG fallback."""
    if job.fallback_key and job.output_format not in named_image_formats(request):
        return job.fallback_key, job.fallback_format
    return job.output_key, job.output_format
