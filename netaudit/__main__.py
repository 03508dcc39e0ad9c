from netaudit.cli import main

# Guarded: a child process started with "spawn" (ingest/imap_commit.py) imports the parent's
# main module again, and must not run the CLI a second time.
if __name__ == "__main__":
    main()
