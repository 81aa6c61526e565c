// Progress bars (Spectre.Console) on stderr with rate and ETA; plain lines when stderr is not a terminal.
using Spectre.Console;

namespace VkPeft.Cli;

public static class Progress
{
    private static readonly IAnsiConsole Err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    /// <summary>Runs <paramref name="work"/>, which reports completed units through the callback, under a progress bar.</summary>
    public static void Run(string title, double total, string unit, Action<Action<double>> work) =>
        Run(title, total, unit, (Action<double, string?> tick) => work(done => tick(done, null)));

    /// <summary>As above; the callback also sets a status text shown after the title (e.g. the current loss).</summary>
    public static void Run(string title, double total, string unit, Action<Action<double, string?>> work)
    {
        if (Console.IsErrorRedirected)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            double last = -1;
            work((done, status) =>
            {
                if (done - last >= total / 10 || done >= total)
                {
                    last = done;
                    double rate = done / Math.Max(sw.Elapsed.TotalSeconds, 1e-9);
                    double eta = rate > 0 ? (total - done) / rate : 0;
                    Console.Error.WriteLine($"{title}: {done:0}/{total:0} {unit} ({rate:0.##} {unit}/s, ETA {TimeSpan.FromSeconds(Math.Round(eta)):g}){(status != null ? "  " + status : "")}");
                }
            });
            return;
        }
        Err.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedlessRateColumn(unit), new RemainingTimeColumn())
            .Start(c =>
            {
                var task = c.AddTask(Markup.Escape(title), maxValue: total);
                work((done, status) =>
                {
                    task.Value = done;
                    if (status != null) task.Description = Markup.Escape($"{title}  {status}");
                });
                task.Value = total;
            });
    }

    /// <summary>Shows units per second of a progress task.</summary>
    private sealed class TransferSpeedlessRateColumn(string unit) : ProgressColumn
    {
        public override Spectre.Console.Rendering.IRenderable Render(Spectre.Console.Rendering.RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            new Text(task.Speed is { } s ? $"{s:0.#} {unit}/s" : "");
    }
}
