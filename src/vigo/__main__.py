from vigo.cli import main

raise SystemExit(main())
