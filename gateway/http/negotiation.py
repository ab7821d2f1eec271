"""The image subtypes a request's Accept header names; processing.imaging.formats decides by them."""

from django.http import HttpRequest


def accepted_image_types(request: HttpRequest) -> frozenset[str]:
    """The subtypes of the image/* media types the Accept header names with a quality above 0."""
    return frozenset(media.sub_type for media in request.accepted_types if media.main_type == "image")
