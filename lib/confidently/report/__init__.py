"""Pictures of the toolbox's records: each tool's section draws the figures a reader of the thesis would
expect; a site is PNG files plus one self-contained HTML page."""

from confidently.report.site import Block, Section, build_site, classify, list_sections, read_records, register_section

__all__ = ["Block", "Section", "build_site", "classify", "list_sections", "read_records", "register_section"]
