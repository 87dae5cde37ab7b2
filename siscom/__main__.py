from siscom.cli import main

raise SystemExit(main())
