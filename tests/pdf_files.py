"""PDF files for the knowledge-base tests, written with pypdf."""

import io

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject


def pdf_with_text(lines: list[str], *, title: str = "") -> bytes:
    """A one-page PDF whose text layer holds `lines` (what a PDF exported from a word
    processor carries); without lines, a page with no text, like a scan."""
    writer = PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
    )
    operators = "".join(f"({line}) Tj 0 -16 Td " for line in lines)
    content = DecodedStreamObject()
    content.set_data(f"BT /F1 12 Tf 72 720 Td {operators}ET".encode())
    page.replace_contents(content)
    if title:
        writer.add_metadata({"/Title": title})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()
