"""The WSGI application uWSGI's workers load (`labmate serve` execs uWSGI with this module)."""

from labmate.bootstrap import long_lived

with long_lived():  # Bolt, SQLAlchemy, Celery and the app itself, loaded without collections
    from bot.server import wsgi_app

    application = wsgi_app()
