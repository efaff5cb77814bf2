from django.apps import AppConfig


class ArchivalConfig(AppConfig):
    name = "archival"
