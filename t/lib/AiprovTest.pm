package AiprovTest;
# Helpers for the mod_aiprov Apache::Test suite.
#
# Loading: t/TEST runs every .t file with the repository's top directory as
# cwd, and t/TEST.PL also puts the absolute t/lib into PERL5LIB; so a test
# starts with
#     use Apache::Test qw(-withtestmore);   # not also "use Test::More"
#     use lib 't/lib';                       # harmless when PERL5LIB has it
#     use AiprovTest;
#
# Backend: AIPROV_TEST_DB=sqlite (default) or pgsql (then AIPROV_PG_URI names
# the database; tools/test.sh sets both and starts httpd with -D AIPROV_PGSQL).
#
# api() decodes the body only when the response's Content-Type is JSON, so a
# response that is JSON but labelled otherwise gives $data undef.
#
# The mock of OpenRouter and the providers (t/mock/upstream.pl, see
# t/mock/README.md) is started by t/TEST.PL before httpd:
#   mock_port()               its port (t/tmp/mock.port, else $ENV{AIPROV_MOCK_PORT})
#   mock_url($path)           "http://127.0.0.1:PORT$path"
#   mock_get($path)           GET, the answer's JSON decoded (undef if not JSON)
#   mock_post($path, $ref)    POST $ref as JSON, the answer's JSON decoded
#   mock_reset()              forget captured requests and OAuth codes
#   mock_captured()           arrayref of the captured requests, oldest first:
#                             {seq, time, method, path, headers{lc name}, body}
# They die when the mock cannot be reached (a harness problem, not a test result).
use strict;
use warnings;
use Exporter 'import';
use Apache::Test ();
use Apache::TestRequest ();
use Cwd ();
use DBI ();
use File::Basename qw(dirname);
use HTTP::Request ();
use JSON::PP ();

our @EXPORT = qw(backend db reset_db make_user make_session api error_log
                 row count_rows httpd_bin module_so
                 mock_port mock_url mock_get mock_post mock_reset mock_captured);
our @EXPORT_OK = qw(modules_conf t_dir);

# t/ as an absolute path, from this file's own location (t/lib/AiprovTest.pm).
my $T_DIR = dirname(dirname(Cwd::abs_path(__FILE__)));
sub t_dir { $T_DIR }

sub backend { ($ENV{AIPROV_TEST_DB} || 'sqlite') eq 'pgsql' ? 'pgsql' : 'sqlite' }

my ($DBH, $DBH_PID);
sub db {
    return $DBH if $DBH && $DBH_PID == $$ && $DBH->ping;
    if (backend() eq 'pgsql') {
        my $uri = $ENV{AIPROV_PG_URI} or die "AIPROV_PG_URI is not set\n";
        $DBH = DBI->connect('dbi:Pg:' . pg_dsn($uri), undef, undef,
                            { RaiseError => 1, AutoCommit => 1, PrintError => 0 });
    }
    else {
        $DBH = DBI->connect("dbi:SQLite:dbname=$T_DIR/tmp/aiprov.db", '', '',
                            { RaiseError => 1, AutoCommit => 1, PrintError => 0,
                              sqlite_unicode => 0 });
        $DBH->sqlite_busy_timeout(10_000);    # httpd's children write too
    }
    $DBH_PID = $$;
    $DBH;
}

# postgresql://user:pass@host:port/db -> a DBD::Pg dsn (it has no URI syntax).
sub pg_dsn {
    my $uri = shift;
    my ($user, $pass, $host, $port, $name) =
        $uri =~ m{^postgres(?:ql)?://(?:([^:@/]*)(?::([^@/]*))?@)?([^:/?]*)(?::(\d+))?/([^?]+)}
        or die "cannot parse AIPROV_PG_URI\n";
    my $unesc = sub { my $s = shift; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s };
    my @kv = ("dbname=" . $unesc->($name));
    push @kv, "host=$host" if length $host;
    push @kv, "port=$port" if $port;
    push @kv, "user=" . $unesc->($user) if defined $user && length $user;
    push @kv, "password=" . $unesc->($pass) if defined $pass;
    join ';', @kv;
}

sub reset_db {
    my $dbh = db();
    $dbh->do($_) for 'DELETE FROM ai_provider', 'DELETE FROM session', 'DELETE FROM "user"';
}

sub random_hex { my $n = shift; open my $fh, '<:raw', '/dev/urandom' or die $!;
                 read($fh, my $b, $n) == $n or die "urandom: $!"; unpack 'H*', $b }

sub make_user {
    my $id = shift;
    $id = 'user-' . random_hex(6) unless defined $id;
    db()->do('INSERT INTO "user" (id, name, email) VALUES (?, ?, ?)',
             undef, $id, "User $id", "$id\@example.test");
    $id;
}

sub make_session {
    my ($user_id, %opt) = @_;
    my $token   = defined $opt{token} ? $opt{token} : random_hex(24);
    my $expires = time + (defined $opt{expires_in} ? $opt{expires_in} : 3600);
    my $at = backend() eq 'pgsql' ? 'to_timestamp(?)' : '?';    # PG: timestamptz
    db()->do("INSERT INTO session (id, token, user_id, user_agent, expires_at)
              VALUES (?, ?, ?, ?, $at)",
             undef, 'sess-' . random_hex(8), $token, $user_id, $opt{user_agent}, $expires);
    $token;
}

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

# api($method, $path, token => .., json => .., body => .., content_type => ..,
#     headers => {..}, basic => [user, pass]) -> ($res, $data)
# With json or body the Content-Type defaults to application/json;
# content_type => '' sends none.
sub api {
    my ($method, $path, %opt) = @_;
    my $req = HTTP::Request->new($method => Apache::TestRequest::resolve_url($path));
    my $body = exists $opt{json} ? $JSON->encode($opt{json}) : $opt{body};
    if (defined $body) {
        $req->content($body);
        $req->header('Content-Length' => length $body);
        my $ct = exists $opt{content_type} ? $opt{content_type} : 'application/json';
        $req->header('Content-Type' => $ct) if defined $ct && length $ct;
    }
    elsif (defined $opt{content_type} && length $opt{content_type}) {
        $req->header('Content-Type' => $opt{content_type});
    }
    $req->header(Authorization => "Bearer $opt{token}") if defined $opt{token};
    $req->authorization_basic(@{ $opt{basic} }) if $opt{basic};
    my $h = $opt{headers} || {};
    $req->header($_ => $h->{$_}) for sort keys %$h;

    my $ua = Apache::TestRequest::user_agent();
    $ua->timeout(60);
    local $Apache::TestRequest::RedirectOK = 0;    # show 3xx as they are
    my $res = $ua->request($req);
    my $data;
    if (($res->header('Content-Type') || '') =~ m{^application/json\b}i) {
        $data = eval { $JSON->decode($res->content) };
    }
    return ($res, $data);
}

# ------------------------------------------------------------ the mock

sub mock_port {
    my $p = slurp("$T_DIR/tmp/mock.port");
    return $1 if $p =~ /^(\d+)\s*\z/;
    return $1 if ($ENV{AIPROV_MOCK_PORT} // '') =~ /^(\d+)\z/;
    die "the mock's port is unknown (no t/tmp/mock.port): t/TEST.PL starts it\n";
}

sub mock_url { my $path = shift // ''; 'http://127.0.0.1:' . mock_port() . $path }

my $MOCK_UA;
sub mock_request {
    my ($method, $path, $ref) = @_;
    require LWP::UserAgent;
    $MOCK_UA ||= LWP::UserAgent->new(timeout => 30, max_redirect => 0, env_proxy => 0,
                                     agent => 'aiprov-test');
    my $req = HTTP::Request->new($method => mock_url($path));
    if (defined $ref) {
        my $body = $JSON->encode($ref);
        $req->content($body);
        $req->header('Content-Type' => 'application/json', 'Content-Length' => length $body);
    }
    my $res = $MOCK_UA->request($req);
    die "mock: $method $path: " . $res->status_line . "\n"
        if $res->code == 500 && ($res->header('Client-Warning') // '') eq 'Internal response';
    ($res->header('Content-Type') // '') =~ m{^application/json\b}i
        ? eval { $JSON->decode($res->content) } : undef;
}

sub mock_get  { mock_request(GET  => $_[0]) }
sub mock_post { mock_request(POST => $_[0], $_[1]) }

sub mock_reset {
    my $r = mock_request(POST => '/_mock/reset');
    die "mock: reset failed\n" unless ref $r eq 'HASH' && $r->{reset};
    1;
}

sub mock_captured {
    my $r = mock_request(GET => '/_mock/captured');
    die "mock: /_mock/captured did not answer a JSON array\n" unless ref $r eq 'ARRAY';
    $r;
}

sub slurp { my $f = shift; open my $fh, '<:raw', $f or return ''; local $/; <$fh> }

sub error_log { slurp("$T_DIR/logs/error_log") }

sub row {
    my $id = shift;
    db()->selectrow_hashref('SELECT * FROM ai_provider WHERE id = ?', undef, $id);
}

sub count_rows { db()->selectrow_array('SELECT count(*) FROM ai_provider') }

sub httpd_bin { Apache::Test::vars('httpd') || '/usr/sbin/apache2' }

sub modules_conf { "$T_DIR/conf/modules.conf" }

# The module t/TEST loaded (from t/conf/modules.conf, written by t/TEST.PL).
sub module_so {
    for (split /\n/, slurp(modules_conf())) {
        return $1 if /^LoadModule\s+aiprov_module\s+(\S+)/;
    }
    Cwd::abs_path("$T_DIR/../mod_aiprov/.libs/mod_aiprov.so");
}

1;
