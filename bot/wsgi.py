"""The WSGI application uWSGI's workers load (`labmate serve` execs uWSGI with this module)."""

from bot.server import wsgi_app

application = wsgi_app()
