"""The web monitor: a thin aiohttp layer (app) over one data-access module (data) with a function per panel."""
