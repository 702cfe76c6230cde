"""The WSGI application uWSGI's workers load (`labmate serve` execs uWSGI with this module)."""

from labmate.bootstrap import configure_logging, long_lived

configure_logging()  # uWSGI starts each worker's Python afresh: without this, only bare warnings reach stderr
with long_lived():  # Bolt, SQLAlchemy, Celery and the app itself, loaded without collections
    from bot.server import wsgi_app

    application = wsgi_app()
