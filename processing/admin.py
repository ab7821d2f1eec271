from django.contrib import admin

from processing.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "service",
        "status",
        "progress",
        "attempts",
        "created_at",
        "finished_at",
        "error_code",
    )
    list_filter = ("status", "service", "created_at")
    search_fields = ("=id", "=input_sha256", "=request_id")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Job._meta.fields]
