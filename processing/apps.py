import logging

from django.apps import AppConfig


class ProcessingConfig(AppConfig):
    name = "processing"
    verbose_name = "Image processing"

    def ready(self) -> None:
        from django.conf import settings
        from django.core import checks
        from django.db.models.signals import post_delete

        from processing import assets, storage
        from processing.events.layer import check_channel_layer
        from processing.imaging import codecs, jxl, libtiff
        from processing.imaging.operations import watermark
        from processing.models import Asset, Job

        checks.register(check_channel_layer)
        codecs.set_avif_speed(settings.AVIF_SPEED)
        jxl.set_effort(settings.JXL_EFFORT)
        codecs.set_pixel_limit(settings.MAX_IMAGE_PIXELS)
        # What Pillow and libtiff say about an upload (corrupt EXIF, a missing codec) is logged with
        # its job, not written to stderr as plain text.
        logging.captureWarnings(True)
        libtiff.send_errors_to_logging()
        post_delete.connect(storage.delete_files_of_deleted_job, sender=Job, dispatch_uid="job-files")
        post_delete.connect(assets.delete_file_of_deleted_asset, sender=Asset, dispatch_uid="asset-files")
        # The watermark operation reads its owners' images through it, in this process's every thread.
        watermark.install_asset_source(assets.StoredAssets())
