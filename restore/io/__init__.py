"""Files in and out: what an MP3's bytes say (mp3info), its tags (tags), the only code that
writes audio and markers atomically (writers), and LAME encoding (lame).

May import restore.audio, restore.errors and restore.faults; never the engine, stages or UI.
"""
