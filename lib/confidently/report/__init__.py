"""Pictures of the toolbox's records: each tool's section draws the figures a reader of the thesis would
expect; a site is PNG files plus one self-contained HTML page."""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Block": "confidently.report.site",
    "Section": "confidently.report.site",
    "build_site": "confidently.report.site",
    "classify": "confidently.report.site",
    "list_sections": "confidently.report.site",
    "read_records": "confidently.report.site",
    "register_section": "confidently.report.site",
})
