"""Does an image file hold all the voxel data its header describes?

SimpleITK reads a NIfTI file whose data end early (a cut ``.nii.gz`` stream, a short ``.nii``)
without complaint, filling the missing voxels with zeros, and MetaImage reports a short or
missing data file as "No such file or directory". :func:`missing_data` checks those formats
from their headers before SimpleITK reads them, and a detached NRRD header for its data file;
NRRD's own reader already refuses short data (:func:`FemurSegLib.images.read_image` words its
message the same way).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Optional

#: bytes per voxel component of MetaImage's element types (MET_LONG/MET_ULONG vary by platform
#: and are left to SimpleITK)
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
              "MET_UINT": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}
_CHUNK = 1 << 20


def missing_data(path: Path) -> Optional[str]:
    """Why ``path`` (.nii, .nii.gz, .mha, .mhd) lacks part of its voxel data, or None when it
    is complete or of another format (or a header this check does not know: SimpleITK then
    decides)."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return _nifti_gz(path)
    if name.endswith(".nii"):
        with open(path, "rb") as f:
            header = f.read(544)
        return _nifti_short(header, path.stat().st_size)
    if name.endswith((".mha", ".mhd")):
        return _metaimage(path)
    if name.endswith((".nrrd", ".nhdr")):
        return _nrrd_data_file(path)
    return None


# ----------------------------------------------------------------------------------------------
# NIfTI-1 and NIfTI-2


def _nifti_need(header: bytes) -> Optional[int]:
    """Bytes of header plus voxel data that a NIfTI header describes, or None if not NIfTI."""
    if len(header) < 4:
        return None
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", header[:4])
        if sizeof_hdr == 348 and len(header) >= 348:
            dim = struct.unpack(endian + "8h", header[40:56])
            (bitpix,) = struct.unpack(endian + "h", header[72:74])
            (vox_offset,) = struct.unpack(endian + "f", header[108:112])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            (bitpix,) = struct.unpack(endian + "h", header[14:16])
            dim = struct.unpack(endian + "8q", header[16:80])
            (vox_offset,) = struct.unpack(endian + "q", header[168:176])
            break
    else:
        return None
    ndim = dim[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8 or any(d < 1 for d in dim[1:ndim + 1]):
        return None  # a malformed header: SimpleITK reports it
    voxels = 1
    for d in dim[1:ndim + 1]:
        voxels *= int(d)
    return max(int(vox_offset), 348) + voxels * (bitpix // 8)


def _nifti_short(header: bytes, have: int) -> Optional[str]:
    need = _nifti_need(header)
    if need is None or have >= need:
        return None
    return (f"its header describes {need} bytes (header and voxel data) and it holds {have} "
            f"({100.0 * have / need:.1f}%)")


def _nifti_gz(path: Path) -> Optional[str]:
    header, have = b"", 0
    try:
        with gzip.open(path, "rb") as f:
            header = f.read(544)
            have = len(header)
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                have += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:  # cut stream, bad CRC, not gzip, bad data
        if _nifti_need(header) is None:
            return None  # not even a NIfTI header: SimpleITK says it cannot read the file
        return str(exc) or type(exc).__name__
    short = _nifti_short(header, have)
    return f"after decompression, {short}" if short else None


# ----------------------------------------------------------------------------------------------
# NRRD (short data are refused by SimpleITK's reader; a missing data file is checked here)


def _nrrd_data_file(path: Path) -> Optional[str]:
    with open(path, "rb") as f:
        if not f.readline().startswith(b"NRRD"):
            return None
        for raw in f:
            line = raw.decode("latin-1").strip()
            if not line:
                break  # end of an attached header
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in ("data file", "datafile"):
                name = value.strip()
                if not name or name.upper().startswith("LIST") or " " in name or "%" in name:
                    return None  # several data files: SimpleITK checks those
                data = Path(name) if Path(name).is_absolute() else path.parent / name
                if not data.is_file():
                    return f"its data file {name} is missing (expected beside {path.name})"
                return None
    return None


# ----------------------------------------------------------------------------------------------
# MetaImage


def _metaimage(path: Path) -> Optional[str]:
    fields, header_bytes = {}, 0
    with open(path, "rb") as f:
        for raw in f:
            header_bytes += len(raw)
            key, sep, value = raw.decode("latin-1").partition("=")
            if not sep:
                return None  # not a MetaImage header: SimpleITK reports it
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                break
            if header_bytes > 65536:
                return None
    try:
        dims = [int(v) for v in fields["dimsize"].split()]
        component = _MET_BYTES[fields.get("elementtype", "").upper()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        data_name = fields["elementdatafile"]
    except (KeyError, ValueError):
        return None
    need = channels * component
    for d in dims:
        need *= d
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if data_name.upper() == "LOCAL":
        data, skip = path, header_bytes
    elif data_name.upper() == "LIST" or "%" in data_name or " " in data_name:
        return None  # one file per slice: SimpleITK checks those
    else:
        data, skip = path.parent / data_name, 0
        if not data.is_file():
            return f"its data file {data_name} is missing (expected beside {path.name})"
        if not compressed:
            try:
                header_size = int(fields.get("headersize", "0"))
            except ValueError:
                header_size = 0
            if header_size == -1:  # the data are the last bytes of the file
                header_size = max(0, data.stat().st_size - need)
            skip = header_size
    where = f"its data file {data_name}" if data != path else "it"
    have = data.stat().st_size - skip
    if not compressed:
        if have < need:
            return (f"its header describes {need} bytes of voxel data and {where} holds "
                    f"{max(have, 0)} ({100.0 * max(have, 0) / need:.1f}%)")
        return None
    return _zlib_short(data, skip, need, where)


def _zlib_short(data: Path, skip: int, need: int, where: str) -> Optional[str]:
    """Why the zlib stream in ``data`` from byte ``skip`` does not give ``need`` bytes."""
    inflater, got = zlib.decompressobj(), 0
    try:
        with open(data, "rb") as f:
            f.seek(skip)
            while not inflater.eof:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                got += len(inflater.decompress(chunk))
    except zlib.error as exc:
        return f"its compressed data are corrupt ({exc})"
    if not inflater.eof:
        return f"its compressed data end before the end of the stream ({where} is cut short)"
    if got < need:
        return (f"its header describes {need} bytes of voxel data and {where} decompresses to "
                f"{got} ({100.0 * got / need:.1f}%)")
    return None
